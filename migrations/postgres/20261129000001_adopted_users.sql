-- Finishes adopting the old FastAPI app's `users` (a no-op on a database authd created).
-- Start-up has checked before any migration that no row breaks these (see
-- src/store/adoption.rs), so they cannot fail half-way.

-- SQLAlchemy declared these NOT NULL; make sure the database says so too, as authd reads
-- them as non-null.
alter table users alter column name set not null;
alter table users alter column email set not null;
alter table users alter column location set not null;
alter table users alter column password set not null;

-- The old app's `serial` key has an `integer` sequence, which widening the column to
-- bigint left as it was.
do $$
declare
    seq text := pg_get_serial_sequence('users', 'user_id');
begin
    if seq is not null and exists (
        select 1 from pg_sequence where seqrelid = seq::regclass and seqtypid = 'integer'::regtype
    ) then
        execute format('alter sequence %s as bigint', seq);
    end if;
end
$$;
