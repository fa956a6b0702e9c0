"""A second implementation of the xe-svm IPC protocol, written from
docs/ipc.md alone: the codec is driven by the document's machine-readable
schema plus the framing and encoding rules the document states in prose.
Standard library only (Python 3.11)."""
