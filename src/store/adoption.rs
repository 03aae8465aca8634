//! Adopting the old FastAPI app's PostgreSQL database in place.
//!
//! Before any migration touches a database, [`check`] reads it and refuses (changing
//! nothing) if a migration could fail half-way or a row could not be used afterwards;
//! its message names the rows to fix. The old app's schema, as SQLAlchemy created it,
//! is in `tests/api/fixtures/old_app_schema.sql`.

use anyhow::Context;
use sqlx::{PgPool, migrate::Migrator};

use crate::domain::{About, Location, UserName};

/// How many offending rows a message lists before saying "and N more".
const SHOWN: usize = 20;

/// Reads the database; fails with the rows to fix if adoption cannot go through.
/// Does nothing when no migration is pending.
pub async fn check(pool: &PgPool, migrator: &Migrator) -> anyhow::Result<()> {
    let exists = |table: &'static str| async move {
        sqlx::query_scalar::<_, bool>("select to_regclass($1) is not null")
            .bind(table)
            .fetch_one(pool)
            .await
            .with_context(|| format!("looking for table {table}"))
    };
    let migrated_before = exists("_sqlx_migrations").await?;
    let applied: Vec<i64> = if migrated_before {
        sqlx::query_scalar("select version from _sqlx_migrations where success").fetch_all(pool).await?
    } else {
        Vec::new()
    };
    if migrator.iter().all(|m| applied.contains(&m.version)) || !exists("users").await? {
        return Ok(());
    }

    let mut problems = Vec::new();
    if !migrated_before {
        // A database that authd never migrated: the old app's, or another's.
        let columns: Vec<String> = sqlx::query_scalar(
            "select column_name::text from information_schema.columns
              where table_schema = current_schema() and table_name = 'users'",
        )
        .fetch_all(pool)
        .await?;
        let missing = ["user_id", "name", "email", "location", "about", "password"]
            .into_iter()
            .filter(|c| !columns.iter().any(|have| have == c))
            .collect::<Vec<_>>();
        if !missing.is_empty() {
            problems.push(format!(
                "table users lacks the column(s) {} that the old app's users table has: is this the old app's database?",
                missing.join(", ")
            ));
            // The row checks below would only fail on the missing columns.
            return Err(refusal(&problems));
        }
        for table in ["sessions", "secrets"] {
            if exists(table).await? {
                problems.push(format!("a table named {table} already exists, and authd needs that name: rename it"));
            }
        }
    }

    let nulls: Vec<i64> = sqlx::query_scalar(
        "select user_id::bigint from users
          where name is null or email is null or location is null or password is null
          order by user_id",
    )
    .fetch_all(pool)
    .await?;
    if !nulls.is_empty() {
        problems.push(format!(
            "users with no name, email, location or password (fill them in or delete the rows): user_id {}",
            listed(&nulls.iter().map(i64::to_string).collect::<Vec<_>>())
        ));
    }

    let duplicates: Vec<(String, Vec<i64>, Vec<String>)> = sqlx::query_as(
        "select lower(email), array_agg(user_id::bigint order by user_id), array_agg(email::text order by user_id)
           from users where email is not null
          group by lower(email) having count(*) > 1
          order by lower(email)",
    )
    .fetch_all(pool)
    .await?;
    if !duplicates.is_empty() {
        let groups = duplicates
            .iter()
            .map(|(_, ids, emails)| {
                let rows = ids.iter().zip(emails).map(|(id, e)| format!("user_id {id} <{e}>")).collect::<Vec<_>>();
                format!("[{}]", rows.join(", "))
            })
            .collect::<Vec<_>>();
        problems.push(format!(
            "emails that differ only by case, which authd takes as one address (keep one row of each group, \
             changing or deleting the others): {}",
            listed(&groups)
        ));
    }

    if !problems.is_empty() {
        return Err(refusal(&problems));
    }

    // Rows that do not block adoption but whose users cannot log in as they are.
    let unusable: Vec<(i64, String)> = sqlx::query_as(
        "select user_id::bigint, email::text from users
          where octet_length(email) <> char_length(email) or password !~ '^\\$(argon2(id|i|d)|2[aby])\\$'
          order by user_id",
    )
    .fetch_all(pool)
    .await?;
    if !unusable.is_empty() {
        let rows = unusable.iter().map(|(id, e)| format!("user_id {id} <{e}>")).collect::<Vec<_>>();
        tracing::warn!(
            rows = listed(&rows),
            "adopting: these users have a non-ASCII email or a password hash that is neither bcrypt nor argon2, \
             and cannot log in until it is fixed"
        );
    }
    let outside = outside_the_profile_rules(pool).await?;
    if !outside.is_empty() {
        tracing::warn!(
            rows = listed(&outside),
            "adopting: these users have a name, location or about that new input may not have (name 1 to {} \
             characters, location 1 to {}, about at most {}, no control characters but line breaks and tabs in \
             about); they log in and read them as they are, but must change them to save them again",
            UserName::MAX_CHARS,
            Location::MAX_CHARS,
            About::MAX_CHARS,
        );
    }
    if !migrated_before {
        tracing::info!("adopting an existing users table: migrating it in place");
    }
    Ok(())
}

/// Users whose profile breaks the domain's rules for new input (the old app's columns had
/// none), each as `user_id N (field, ...)`; read a page at a time.
async fn outside_the_profile_rules(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    let mut outside = Vec::new();
    let mut after = i64::MIN;
    loop {
        let page: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(
            "select user_id::bigint, name::text, location::text, about::text from users
              where user_id > $1 order by user_id limit 1000",
        )
        .bind(after)
        .fetch_all(pool)
        .await
        .context("reading the users' profiles")?;
        let Some(&(last, ..)) = page.last() else { return Ok(outside) };
        after = last;
        for (user_id, name, location, about) in &page {
            let broken = [
                ("name", UserName::parse(name).is_err()),
                ("location", Location::parse(location).is_err()),
                ("about", About::parse(about.as_deref()).is_err()),
            ]
            .into_iter()
            .filter_map(|(field, bad)| bad.then_some(field))
            .collect::<Vec<_>>();
            if !broken.is_empty() {
                outside.push(format!("user_id {user_id} ({})", broken.join(", ")));
            }
        }
    }
}

fn refusal(problems: &[String]) -> anyhow::Error {
    anyhow::anyhow!(
        "this database cannot be adopted as it is, and nothing in it was changed; fix the following and start again: {}",
        problems.join("; ")
    )
}

fn listed(items: &[String]) -> String {
    let shown = items.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    match items.len().saturating_sub(SHOWN) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}
