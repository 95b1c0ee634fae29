//! Integration tests of rayr against real clusters: driver programs in `src/bin` (real
//! binaries, since workers re-execute them) and the tests in `tests/` that run them, kill
//! things, and check the event record.
