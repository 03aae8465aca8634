//! Black-box tests: each starts the real server on port 0 over a fresh database and talks
//! to it as its callers do. Every test runs on SQLite, and on PostgreSQL too when
//! `TEST_DATABASE_URL` is set (see `on_both_backends!`).

#[macro_use]
mod helpers;

mod abuse;
mod account;
mod admin;
mod adoption;
mod audit;
mod browsers;
mod client;
mod clients;
mod concurrency;
mod connections;
mod credentials;
mod credentials_under_attack;
mod docs;
mod embedded;
mod factors;
mod flood;
mod keys_at_rest;
mod login;
mod mail;
mod me;
mod metrics;
mod nginx;
mod old_clients;
mod passkeys;
mod pgbouncer;
mod pooler;
mod proxies;
mod refresh;
mod register;
mod replicas;
mod request_ids;
mod resilience;
mod revocations;
mod roles;
mod security_events;
mod session_limits;
mod sessions;
mod signing;
mod smtp;
mod storage;
mod tls;
mod transport;
