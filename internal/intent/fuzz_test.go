package intent

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that every problem it reports
// names the file, and that every file it accepts compiles and survives a
// round trip through its canonical form.
func FuzzParse(f *testing.F) {
	examples, _ := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	for _, e := range examples {
		data, err := os.ReadFile(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"", header, canonicalA, canonicalB,
		header + "network:\n  egress:\n    - {to: 10.0.0.0/8, ports: [1-3, 5]}\n    - {to: 10.1.0.0/16, ports: [4, 6]}\n",
		header + "network:\n  egress:\n    - {to: a.example, ports: [1, 3, 5, 7, 9, 11, 13, 15]}\n    - {to: 0.0.0.0/0, ports: [2, 4, 6, 8, 10, 12, 14, 16]}\n",
		header + "network:\n  unix: [\"@x\", /run/a]\n  raw_sockets: true\nexec:\n  allow: any\n",
		"name: &a x\npurpose: *a\n",
		"name: t\n purpose: p\n",
		header + "---\n" + header,
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := Parse("fuzz.yaml", data)
		if err != nil {
			var verr *ValidationError
			if !errors.As(err, &verr) || len(verr.Problems) == 0 {
				t.Fatalf("error %v is not a *ValidationError", err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.yaml") {
					t.Fatalf("problem without the file name: %q", line)
				}
			}
			return
		}
		c, err := Compile(in, nil, nil)
		if err != nil {
			t.Fatalf("accepted, but does not compile: %v\n%s", err, data)
		}
		back, err := FromCanonical(in.Canonical())
		if err != nil {
			t.Fatalf("canonical form refused: %v\n%s", err, in.Canonical())
		}
		if back.Hash() != in.Hash() {
			t.Fatalf("hash changed in a round trip:\n%s\n%s", in.Canonical(), back.Canonical())
		}
		c2, err := Compile(back, nil, nil)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip compiles differently: %v\n%#v\n%#v", err, c, c2)
		}
	})
}
