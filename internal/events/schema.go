package events

import (
	"errors"
	"fmt"

	"github.com/idend/idend/internal/events/recordpb"
)

// Schema version this package writes. Readers accept any minor version of
// SchemaMajor and older majors, and refuse newer majors.
const (
	SchemaMajor = 1
	SchemaMinor = 0
)

// ErrNewerSchema is returned when a record was written with a newer major
// schema version than this idend reads.
var ErrNewerSchema = errors.New("recording written by a newer idend")

// currentSchema is shared by every record the recorder writes. Nobody
// modifies it.
var currentSchema = &recordpb.SchemaVersion{Major: SchemaMajor, Minor: SchemaMinor}

// checkSchema refuses records this package cannot interpret.
func checkSchema(r *recordpb.Record) error {
	v := r.GetSchemaVersion()
	if v.GetMajor() > SchemaMajor {
		return fmt.Errorf("record %d has schema %d.%d, this idend reads %d.x: %w",
			r.GetSeq(), v.GetMajor(), v.GetMinor(), SchemaMajor, ErrNewerSchema)
	}
	return nil
}
