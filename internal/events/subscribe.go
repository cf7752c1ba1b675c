package events

import (
	"google.golang.org/protobuf/proto"

	"github.com/idend/idend/internal/events/recordpb"
)

// SubscriberGapReason is the reason of the Gap records a slow subscriber
// receives in place of the records it missed.
const SubscriberGapReason = "subscriber too slow"

// Subscribe returns a channel that receives every record appended from now
// on, and a function that ends the subscription and closes the channel.
// The channel holds up to buf records; when it is full, records are
// dropped rather than slowing the recorder, and the subscriber later
// receives a Gap record (seq 0, not part of the recording) counting them.
// Received records are shared between subscribers: do not modify them.
// Close ends all subscriptions.
func (rec *Recorder) Subscribe(buf int) (<-chan *recordpb.Record, func()) {
	rec.mu.Lock()
	defer rec.mu.Unlock()

	ch := make(chan *recordpb.Record, max(buf, 1))
	if rec.closed {
		close(ch)
		return ch, func() {}
	}
	id := rec.subs.add(ch)
	return ch, func() {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.subs.remove(id)
	}
}

// subscriber is one live follower of the recording.
type subscriber struct {
	ch      chan *recordpb.Record
	dropped uint64
	// lastSent is the seq of the last record delivered.
	lastSent uint64
}

// subscribers are guarded by the recorder's mutex.
type subscribers struct {
	next  uint64
	byID  map[uint64]*subscriber
	drops uint64
}

func (s *subscribers) add(ch chan *recordpb.Record) uint64 {
	if s.byID == nil {
		s.byID = make(map[uint64]*subscriber)
	}
	s.next++
	s.byID[s.next] = &subscriber{ch: ch}
	return s.next
}

func (s *subscribers) remove(id uint64) {
	if sub, ok := s.byID[id]; ok {
		close(sub.ch)
		delete(s.byID, id)
	}
}

func (s *subscribers) closeAll() {
	for id := range s.byID {
		s.remove(id)
	}
}

// publish offers a copy of r to every subscriber without blocking.
func (s *subscribers) publish(r *recordpb.Record) {
	if len(s.byID) == 0 {
		return
	}
	c := proto.Clone(r).(*recordpb.Record)
	for _, sub := range s.byID {
		if sub.dropped > 0 && !sub.offer(sub.gap(r.Seq)) {
			sub.dropped++
			s.drops++
			continue
		}
		if sub.dropped > 0 {
			sub.dropped, sub.lastSent = 0, r.Seq-1
		}
		if !sub.offer(c) {
			sub.dropped++
			s.drops++
			continue
		}
		sub.lastSent = r.Seq
	}
}

func (sub *subscriber) offer(r *recordpb.Record) bool {
	select {
	case sub.ch <- r:
		return true
	default:
		return false
	}
}

// gap stands for the records the subscriber missed before seq.
func (sub *subscriber) gap(seq uint64) *recordpb.Record {
	return &recordpb.Record{Body: &recordpb.Record_Gap{Gap: &recordpb.Gap{
		Count:    sub.dropped,
		FirstSeq: sub.lastSent,
		LastSeq:  seq,
		Reason:   SubscriberGapReason,
	}}}
}
