//! To be written: the call orchestrator (issue 4).
