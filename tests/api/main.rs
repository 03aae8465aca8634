//! Black-box tests: each starts the real server on port 0 over a fresh PostgreSQL
//! database and talks to it as its callers do.

mod helpers;

mod concurrency;
mod login;
mod me;
mod refresh;
mod register;
mod sessions;
mod signing;
mod transport;
