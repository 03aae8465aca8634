//! Keys at rest: the embedded database is its owner's alone, stored secrets and private
//! keys are sealed under `KEY_ENCRYPTION_KEY` when one is set, and HMAC keys are long
//! enough for their hash.

use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use secrecy::SecretSlice;

use crate::helpers::{LogCapture, TestDb, spawn_app, spawn_app_with, test_settings};
use authd::startup::Application;

/// How a sealed value starts, in the `secrets` and `signing_keys` tables alike.
const SEALED: &[u8] = b"authd-sealed:v1:";

fn kek(byte: u8) -> Option<SecretSlice<u8>> {
    Some(SecretSlice::from(vec![byte; 32]))
}

#[cfg(unix)]
#[tokio::test]
async fn the_embedded_database_is_created_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    app.ada_tokens().await;
    let url = app.database_url().to_owned();
    let file = std::path::PathBuf::from(url.trim_start_matches("sqlite://"));
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let dir = file.parent().unwrap();
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    assert_eq!(mode(&file), 0o600, "{}", file.display());
    for companion in ["-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{companion}", file.display()));
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}

/// A file made before authd made it private keeps its mode, and start-up says so.
#[cfg(unix)]
#[tokio::test]
async fn an_existing_database_file_others_may_read_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let log = LogCapture::start();
    let db = TestDb::create().await;
    let file = std::path::PathBuf::from(db.url.trim_start_matches("sqlite://"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let settings = test_settings(&db.url);
    let _app = crate::helpers::start(db, settings).await;
    let warned = log.events().into_iter().any(|e| {
        e["level"] == "WARN" && e["message"].as_str().is_some_and(|m| m.contains("mode 644") && m.contains("chmod 600"))
    });
    assert!(warned, "{}", log.text());
}

/// Every value in the two tables that hold key material, for looking at them as a thief would.
async fn stored_keys(app: &crate::helpers::TestApp) -> Vec<Vec<u8>> {
    let mut values = app.sql_column("select value from secrets", &[]).await;
    values.extend(app.sql_column("select private_pem from signing_keys where private_pem is not null", &[]).await);
    values
}

async fn a_key_encryption_key_seals_stored_keys_and_a_wrong_one_stops_start_up() {
    // Started without a KEK: the generated keys are stored in the clear, as before.
    let app = spawn_app_with(|s| s.tokens.algorithm = Algorithm::ES256).await;
    let (access, refresh) = app.ada_tokens().await;
    let plain = stored_keys(&app).await;
    assert!(plain.len() >= 2, "a refresh key and a signing key at least: {}", plain.len());
    assert!(plain.iter().all(|v| !v.starts_with(SEALED)));

    // The first start with a KEK seals them in place, and every token issued still works.
    let app = app.restart_with(|s| s.tokens.key_encryption_key = kek(7)).await;
    let sealed = stored_keys(&app).await;
    assert_eq!(sealed.len(), plain.len());
    for value in &sealed {
        assert!(value.starts_with(SEALED), "{}", String::from_utf8_lossy(value));
        for secret in &plain {
            let text = String::from_utf8_lossy(secret);
            assert!(!String::from_utf8_lossy(value).contains(text.as_ref()), "the clear text remains");
        }
    }
    assert_eq!(app.me(Some(&format!("Bearer {access}"))).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::OK);
    // A restart with the same key reads them, and leaves them as they were.
    let app = app.restart().await;
    assert_eq!(app.me(Some(&format!("Bearer {access}"))).await.status(), StatusCode::OK);
    assert_eq!(stored_keys(&app).await, sealed);

    // A wrong key, or none, stops start-up with a message naming the variable.
    let (db, settings) = app.stop().await;
    for key in [kek(8), None] {
        let mut settings = settings.clone();
        settings.tokens.key_encryption_key = key;
        let error = Application::build(settings).await.err().expect("start-up refuses");
        let message = format!("{error:#}");
        assert!(message.contains("KEY_ENCRYPTION_KEY"), "{message}");
    }
    drop(db);
}

async fn a_first_start_with_a_key_encryption_key_never_stores_a_key_in_the_clear() {
    let app = spawn_app_with(|s| s.tokens.key_encryption_key = kek(9)).await;
    let (access, _) = app.ada_tokens().await;
    let stored = stored_keys(&app).await;
    assert!(!stored.is_empty() && stored.iter().all(|v| v.starts_with(SEALED)));
    assert_eq!(app.me(Some(&format!("Bearer {access}"))).await.status(), StatusCode::OK);
}

/// RFC 7518 §3.2: an HMAC key as long as the hash's output at least. Generated keys are
/// 64 bytes (enough for HS512); a configured one that is shorter gets a warning naming it.
async fn hmac_keys_are_as_long_as_their_hash_and_a_short_one_is_named() {
    let app = spawn_app().await;
    app.ada_tokens().await;
    let lengths = app.sql_column("select value from secrets", &[]).await.iter().map(Vec::len).collect::<Vec<_>>();
    assert!(!lengths.is_empty() && lengths.iter().all(|n| *n == 64), "generated key lengths {lengths:?}");

    let log = LogCapture::start();
    let db = TestDb::create().await;
    let mut settings = test_settings(&db.url);
    settings.tokens.algorithm = Algorithm::HS512;
    settings.tokens.secret_key = Some("forty-eight bytes is still too short for HS512!!".into());
    settings.tokens.refresh_secret = Some("twenty-four bytes shy...".into());
    let app = crate::helpers::start(db, settings).await;
    app.ada_tokens().await;
    let warnings = log.events().into_iter().filter(|e| e["level"] == "WARN").collect::<Vec<_>>();
    for (var, needed) in [("SECRET_KEY", "64"), ("REFRESH_TOKEN_SECRET", "32")] {
        let warning = warnings
            .iter()
            .find(|e| e["message"].as_str().is_some_and(|m| m.contains(var)))
            .unwrap_or_else(|| panic!("no warning naming {var} in {warnings:#?}"));
        assert!(warning["message"].as_str().unwrap().contains(needed), "{warning}");
    }
}

on_both_backends!(
    a_key_encryption_key_seals_stored_keys_and_a_wrong_one_stops_start_up,
    a_first_start_with_a_key_encryption_key_never_stores_a_key_in_the_clear,
    hmac_keys_are_as_long_as_their_hash_and_a_short_one_is_named,
);
