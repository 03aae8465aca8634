-- Asymmetric keys for access tokens. `private_pem` is null for a key read from a file
-- (only its public half is kept, to stay published after a change of file). A key with
-- `retired_at` set signs nothing more, and is published until its tokens have expired.
create table signing_keys (
    kid text primary key,
    algorithm text not null,
    public_jwk text not null,
    private_pem text,
    created_at text not null,
    retired_at text
) strict;
