// Package events owns idend's recording: the append-only, hash-chained
// segment files every kernel action and control decision is written to,
// and the tools that read them back.
//
// A recording is a directory of segment files (seg-000000000001.idr, ...)
// holding one chain of records: each record stores the SHA-256 of the
// previous record's hash and its own payload, so editing, deleting or
// reordering any record breaks every link after it. [Recorder] writes a
// recording, [Verify] checks its chain, [OpenReader] reads it, [Replay]
// re-evaluates its kernel actions against intents, and [FormatText] and
// [FormatJSON] print it.
package events
