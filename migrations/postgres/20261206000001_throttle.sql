-- Rate-limit counters shared by every replica: one row per key (such as
-- `login-ip:<ip>` or `login-account-ip:<account>:<ip>`), counting hits in a fixed window
-- that starts at `window_start_ms`. Times are Unix milliseconds, passed from Rust.
create table throttle (
    key text primary key,
    hits bigint not null,
    window_start_ms bigint not null,
    last_hit_ms bigint not null
);

create index throttle_last_hit_idx on throttle (last_hit_ms);
