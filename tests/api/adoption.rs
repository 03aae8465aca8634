//! Adopting the old FastAPI app's PostgreSQL database in place: its schema built from its
//! SQL, bcrypt users made by a bcrypt library, then authd started on it.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, Row};

use crate::helpers::{Backend, TestDb, backend, json_of, on_postgres, start, test_settings};
use authd::startup::Application;

const OLD_SCHEMA: &str = include_str!("fixtures/old_app_schema.sql");

/// A fresh PostgreSQL database holding the old app's schema.
async fn old_app_database() -> (TestDb, PgConnection) {
    assert!(matches!(backend(), Backend::Postgres(_)));
    let db = TestDb::create().await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    conn.execute(sqlx::raw_sql(OLD_SCHEMA)).await.unwrap();
    (db, conn)
}

/// Inserts a user as the old app did, returning its id.
async fn old_user(conn: &mut PgConnection, name: &str, email: &str, about: Option<&str>, hash: &str) -> i32 {
    sqlx::query_scalar(
        "insert into users (name, email, location, about, password) values ($1, $2, 'Old Town', $3, $4) returning user_id",
    )
    .bind(name)
    .bind(email)
    .bind(about)
    .bind(hash)
    .fetch_one(conn)
    .await
    .unwrap()
}

async fn count(conn: &mut PgConnection, table: &str) -> i64 {
    conn.fetch_one(sqlx::AssertSqlSafe(format!("select count(*) from {table}"))).await.unwrap().get(0)
}

#[tokio::test]
async fn the_old_apps_database_is_adopted_and_its_users_log_in_with_their_old_passwords() {
    on_postgres("adoption::the_old_apps_database_is_adopted", async {
        let (db, mut conn) = old_app_database().await;
        // As the old app's bcrypt library made them: $2b$ at cost 12, and the other two
        // prefixes other bcrypt implementations write.
        let hashed = |password: &str, cost, version| {
            bcrypt::hash_with_result(password, cost).unwrap().format_for_version(version)
        };
        let users = [
            (
                "Grace Hopper",
                "grace@example.com",
                Some("Admiral"),
                "grace's old password",
                hashed("grace's old password", 12, bcrypt::Version::TwoB),
            ),
            (
                "Linus",
                "Linus@Example.com",
                None,
                "linus old password",
                hashed("linus old password", 10, bcrypt::Version::TwoA),
            ),
            (
                "Ken",
                "ken@example.com",
                Some("Unix"),
                "ken's old password",
                hashed("ken's old password", 4, bcrypt::Version::TwoY),
            ),
        ];
        let mut ids = Vec::new();
        for (name, email, about, _, hash) in &users {
            let id = old_user(&mut conn, name, email, *about, hash).await;
            sqlx::query("insert into refreshaccesstokens (tokens, type, user_id) values ($1, 'Bearer', $2)")
                .bind(format!("eyJhbGciOiJIUzI1NiJ9.eyJpZCI6{id}fQ.legacy-signature"))
                .bind(id)
                .execute(&mut conn)
                .await
                .unwrap();
            ids.push(id);
        }

        let settings = test_settings(&db.url);
        let app = start(db, settings).await;
        for ((name, email, about, password, _), id) in users.iter().zip(&ids) {
            let (status, body) = json_of(app.login(&email.to_uppercase(), password).await).await;
            assert_eq!(status, StatusCode::OK, "{email}: {body}");
            assert_eq!(
                (&body["data"]["name"], &body["data"]["email"], &body["data"]["about"], &body["data"]["location"]),
                (&json!(name), &json!(email), &json!(about), &json!("Old Town"))
            );
            let stored: String = sqlx::query_scalar("select password from users where user_id = $1")
                .bind(i64::from(*id))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{email}: not upgraded: {stored}");
            // Again, now against the argon2id hash; and a wrong password still fails.
            assert_eq!(app.login(email, password).await.status(), StatusCode::OK);
            assert_eq!(app.login(email, "not the password").await.status(), StatusCode::UNAUTHORIZED);
        }

        // Legacy refresh tokens are not honoured: those users log in again.
        let legacy: String =
            sqlx::query_scalar("select tokens from refreshaccesstokens limit 1").fetch_one(&mut conn).await.unwrap();
        let (status, body) = json_of(app.refresh(&legacy).await).await;
        assert_eq!(
            (status, body),
            (StatusCode::UNAUTHORIZED, json!({"error": {"error": "Authorization failed. Log in again."}}))
        );

        // Emails stay unique whatever their case; new users get fresh ids.
        let mut grace = crate::helpers::ada();
        grace["email"] = json!("GRACE@example.com");
        assert_eq!(app.register(&grace).await.status(), StatusCode::BAD_REQUEST);
        assert_eq!(app.register(&crate::helpers::ada()).await.status(), StatusCode::CREATED);
        let login: Value = app.login("ada@example.com", "correct horse battery").await.json().await.unwrap();
        let access = login["data"]["user_token"]["token"].as_str().unwrap();
        let me: Value = app.me(Some(&format!("Bearer {access}"))).await.json().await.unwrap();
        assert!(me["user_id"].as_i64().unwrap() > i64::from(*ids.iter().max().unwrap()), "{me}");

        // No row was lost.
        assert_eq!(count(&mut conn, "users").await, 4);
        assert_eq!(count(&mut conn, "refreshaccesstokens").await, 3);
    })
    .await
}

#[tokio::test]
async fn adoption_stops_naming_the_rows_to_fix_and_changes_nothing() {
    on_postgres("adoption::adoption_stops_naming_the_rows_to_fix", async {
        let (db, mut conn) = old_app_database().await;
        let hash = bcrypt::hash("pw-pw-pw-pw", 4).unwrap();
        let first = old_user(&mut conn, "Ada", "ada@example.com", None, &hash).await;
        let second = old_user(&mut conn, "Ada again", "Ada@Example.COM", None, &hash).await;
        old_user(&mut conn, "Bob", "bob@example.com", None, &hash).await;
        // An older schema could have let a required column be null.
        conn.execute("alter table users alter column location drop not null").await.unwrap();
        let nameless = sqlx::query_scalar::<_, i32>(
            "insert into users (name, email, password) values ('No Where', 'nowhere@example.com', $1) returning user_id",
        )
        .bind(&hash)
        .fetch_one(&mut conn)
        .await
        .unwrap();

        let settings = test_settings(&db.url);
        let error = Application::build(settings.clone()).await.err().expect("adoption is refused");
        let message = format!("{error:#}");
        for expected in [
            format!("user_id {first} <ada@example.com>"),
            format!("user_id {second} <Ada@Example.COM>"),
            format!("user_id {nameless}"),
            "nothing in it was changed".to_owned(),
        ] {
            assert!(message.contains(&expected), "{expected:?} missing from: {message}");
        }
        // Nothing was changed: no migration ran, no table or column was added.
        let untouched: (bool, bool, i64) = sqlx::query_as(
            "select to_regclass('_sqlx_migrations') is null, to_regclass('sessions') is null,
                    (select count(*) from information_schema.columns where table_name = 'users' and column_name = 'created_at')",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(untouched, (true, true, 0));
        assert_eq!(count(&mut conn, "users").await, 4);

        // Once the rows are fixed, adoption goes through.
        sqlx::query("delete from users where user_id = $1").bind(second).execute(&mut conn).await.unwrap();
        sqlx::query("update users set location = 'Somewhere' where user_id = $1").bind(nameless).execute(&mut conn).await.unwrap();
        let app = start(db, settings).await;
        assert_eq!(app.login("ADA@example.com", "pw-pw-pw-pw").await.status(), StatusCode::OK);
    })
    .await
}

#[tokio::test]
async fn an_adopted_user_can_delete_their_account_despite_the_old_token_table() {
    on_postgres("adoption::an_adopted_user_can_delete_their_account", async {
        let (db, mut conn) = old_app_database().await;
        let id = old_user(&mut conn, "Grace", "grace@example.com", None, &bcrypt::hash("grace's password", 4).unwrap()).await;
        let other = old_user(&mut conn, "Ken", "ken@example.com", None, &bcrypt::hash("ken's password", 4).unwrap()).await;
        for user in [id, id, other] {
            sqlx::query("insert into refreshaccesstokens (tokens, type, user_id) values (gen_random_uuid()::text, 'Bearer', $1)")
                .bind(user)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let settings = test_settings(&db.url);
        let app = start(db, settings).await;
        let login: Value = app.login("grace@example.com", "grace's password").await.json().await.unwrap();
        let access = login["data"]["user_token"]["token"].as_str().unwrap().to_owned();

        let response = app
            .http
            .delete(app.url("/api/v1/me"))
            .bearer_auth(&access)
            .json(&json!({"password": "grace's password"}))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(app.me(Some(&format!("Bearer {access}"))).await.status(), StatusCode::UNAUTHORIZED);
        // Grace's old rows went with her; Ken's stay.
        assert_eq!(count(&mut conn, "refreshaccesstokens").await, 1);
        assert_eq!(count(&mut conn, "users").await, 1);
        let mut grace = crate::helpers::ada();
        grace["email"] = json!("grace@example.com");
        assert_eq!(app.register(&grace).await.status(), StatusCode::CREATED);
    })
    .await
}

/// The old app's columns had no bounds. Rows past authd's field limits are named at
/// adoption, and their users still log in and read them; the limits apply to new input.
#[tokio::test]
async fn rows_past_the_field_limits_are_named_at_adoption_and_still_work() {
    on_postgres("adoption::rows_past_the_field_limits_are_named_at_adoption", async {
        let (db, mut conn) = old_app_database().await;
        let hash = bcrypt::hash("an old password", 4).unwrap();
        let fine = old_user(&mut conn, "Ada", "ada@example.com", Some(""), &hash).await;
        let (long_name, long_about) = ("N".repeat(1500), "a".repeat(12_000));
        let wordy = old_user(&mut conn, &long_name, "wordy@example.com", Some(&long_about), &hash).await;
        let tabbed = sqlx::query_scalar::<_, i32>(
            "insert into users (name, email, location, password) values ('Tab', 'tab@example.com', E'Old\\tTown', $1)
             returning user_id",
        )
        .bind(&hash)
        .fetch_one(&mut conn)
        .await
        .unwrap();

        let log = Log::default();
        let settings = test_settings(&db.url);
        let app = {
            let _capture = tracing::subscriber::set_default(log.subscriber());
            start(db, settings).await
        };
        let warned = log.text();
        for expected in [format!("user_id {wordy} (name, about)"), format!("user_id {tabbed} (location)")] {
            assert!(warned.contains(&expected), "{expected:?} missing from: {warned}");
        }
        assert!(!warned.contains(&format!("user_id {fine} (")), "{warned}");

        // They log in and read their profile as it is, and may change another field.
        let (status, login) = json_of(app.login("wordy@example.com", "an old password").await).await;
        assert_eq!(status, StatusCode::OK, "{login}");
        assert_eq!((&login["data"]["name"], &login["data"]["about"]), (&json!(long_name), &json!(long_about)));
        let access = login["data"]["user_token"]["token"].as_str().unwrap();
        let (status, me) = json_of(app.me(Some(&format!("Bearer {access}"))).await).await;
        assert_eq!((status, &me["name"]), (StatusCode::OK, &json!(long_name)));
        let response =
            app.http.patch(app.url("/api/v1/me")).bearer_auth(access).json(&json!({"location": "Paris"})).send().await;
        let (status, me) = json_of(response.unwrap()).await;
        assert_eq!((status, &me["location"], &me["name"]), (StatusCode::OK, &json!("Paris"), &json!(long_name)));
        assert_eq!(app.login("tab@example.com", "an old password").await.status(), StatusCode::OK);
    })
    .await
}

/// What the server logs, as text.
#[derive(Clone, Default)]
struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Log {
    /// A subscriber writing here: set it as this thread's default while the server starts
    /// (a test runs on one thread, so the adoption check's events come to it).
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        let log = self.clone();
        tracing_subscriber::fmt().with_ansi(false).with_writer(move || log.clone()).finish()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
