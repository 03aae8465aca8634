//! An example service behind authd: `GET /orders` answers only callers with a live access
//! token, verified in process by `authd-client` (no call to authd per request), which also
//! follows authd's revocations so that a logout is refused at once.

use authd_client::{Claims, Verifier};
use axum::{Extension, Json, Router, routing::get};
use serde_json::{Value, json};

/// The service's routes, every one behind the verifier's layer.
pub fn router(verifier: &Verifier) -> Router {
    Router::new().route("/orders", get(orders)).layer(verifier.layer())
}

/// The caller's orders: here, only who the caller is.
async fn orders(Extension(claims): Extension<Claims>) -> Json<Value> {
    Json(json!({"user_id": claims.user_id(), "orders": []}))
}
