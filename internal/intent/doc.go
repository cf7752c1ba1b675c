// Package intent owns the intent of a session: the YAML file an operator
// writes to declare what an agent may do, its validation, its canonical
// form and hash, its compilation into the entries the kernel programs read,
// the check that a sub-session's intent is a subset of its parent's, and
// Evaluate, the one function that decides an action the way the kernel
// does, for the daemon and for replay alike.
//
// The package does no I/O beyond Load and ResolveExec, and imports nothing
// of BPF: the loader turns a Compiled into map entries.
package intent
