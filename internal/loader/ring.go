package loader

import (
	"fmt"

	"github.com/cilium/ebpf/ringbuf"
)

// Rings opens readers on the event rings: events (allowed actions and
// tracking) and denials. The caller closes both.
func (l *Loader) Rings() (events, denials *ringbuf.Reader, err error) {
	events, err = ringbuf.NewReader(l.net.EventsRing)
	if err != nil {
		return nil, nil, fmt.Errorf("open events ring: %w", err)
	}
	denials, err = ringbuf.NewReader(l.net.DenialsRing)
	if err != nil {
		events.Close()
		return nil, nil, fmt.Errorf("open denials ring: %w", err)
	}
	return events, denials, nil
}

// Losses returns, per ring and event kind, how many records found their
// ring full since the maps were created. Indexed [ring][kind].
func (l *Loader) Losses() ([RingCount][KindCount]uint64, error) {
	var out [RingCount][KindCount]uint64
	for ring := range RingCount {
		for kind := range KindCount {
			var perCPU []uint64
			idx := uint32(ring*KindCount + kind)
			if err := l.net.LossesMap.Lookup(idx, &perCPU); err != nil {
				return out, fmt.Errorf("read losses: %w", err)
			}
			for _, n := range perCPU {
				out[ring][kind] += n
			}
		}
	}
	return out, nil
}

// RingCount and KindCount size the loss table.
const (
	RingCount = int(netIdendRingRING_MAX)
	KindCount = int(netIdendEventKindEVENT_KIND_MAX)
)
