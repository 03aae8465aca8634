use tonic::{Request, Response, Status};

use super::{caller, client_info};
use crate::{
    core::Authd,
    pb::{
        CompleteLoginRequest, FinishPasskeyLoginRequest, GetJwksRequest, GetJwksResponse, Jwk, ListSessionsRequest,
        ListSessionsResponse, LoginRequest, LogoutRequest, LogoutResponse, RefreshTokenRequest,
        RequestPasswordResetRequest, RequestPasswordResetResponse, ResetPasswordRequest, ResetPasswordResponse,
        RevocationEvent, RevokeSessionRequest, RevokeSessionResponse, RevokeTokenRequest, RevokeTokenResponse,
        StartPasskeyChallengeRequest, StartPasskeyChallengeResponse, StartPasskeyLoginRequest,
        StartPasskeyLoginResponse, TokenResponse, ValidateTokenRequest, ValidateTokenResponse, WatchRevocationsRequest,
        auth_service_server::AuthService,
    },
};

pub struct AuthApi(pub Authd);

/// The events of one service's revocation feed, as the core sends them.
pub struct RevocationEvents(tokio::sync::mpsc::Receiver<crate::core::Result<RevocationEvent>>);

impl futures_core::Stream for RevocationEvents {
    type Item = Result<RevocationEvent, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|event| event.map(|event| event.map_err(Status::from)))
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    type WatchRevocationsStream = RevocationEvents;

    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let watcher = self.0.authorize_watcher(authorization, &client_info(&request)).await?;
        Ok(Response::new(RevocationEvents(self.0.watch_revocations(watcher, request.get_ref().cursor)?)))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<TokenResponse>, Status> {
        let signed_in = self.0.login(request.get_ref(), &client_info(&request)).await?;
        Ok(Response::new(signed_in.tokens))
    }

    async fn complete_login(&self, request: Request<CompleteLoginRequest>) -> Result<Response<TokenResponse>, Status> {
        let signed_in = self.0.complete_login(request.get_ref(), &client_info(&request)).await?;
        Ok(Response::new(signed_in.tokens))
    }

    async fn start_passkey_challenge(
        &self,
        request: Request<StartPasskeyChallengeRequest>,
    ) -> Result<Response<StartPasskeyChallengeResponse>, Status> {
        Ok(Response::new(self.0.start_passkey_challenge(request.get_ref(), &client_info(&request)).await?))
    }

    async fn start_passkey_login(
        &self,
        request: Request<StartPasskeyLoginRequest>,
    ) -> Result<Response<StartPasskeyLoginResponse>, Status> {
        Ok(Response::new(self.0.start_passkey_login(&client_info(&request)).await?))
    }

    async fn finish_passkey_login(
        &self,
        request: Request<FinishPasskeyLoginRequest>,
    ) -> Result<Response<TokenResponse>, Status> {
        let signed_in = self.0.finish_passkey_login(request.get_ref(), &client_info(&request)).await?;
        Ok(Response::new(signed_in.tokens))
    }

    async fn refresh_token(&self, request: Request<RefreshTokenRequest>) -> Result<Response<TokenResponse>, Status> {
        let signed_in = self.0.refresh(request.get_ref(), &client_info(&request)).await?;
        Ok(Response::new(signed_in.tokens))
    }

    async fn logout(&self, request: Request<LogoutRequest>) -> Result<Response<LogoutResponse>, Status> {
        let out = self.0.logout(&caller(&self.0, &request).await?, request.get_ref().all_sessions).await?;
        Ok(Response::new(LogoutResponse { sessions_ended: out.sessions_ended as i64, device_token: String::new() }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        self.0.revoke_token(&request.get_ref().token, &client_info(&request)).await?;
        Ok(Response::new(RevokeTokenResponse {}))
    }

    async fn validate_token(
        &self,
        request: Request<ValidateTokenRequest>,
    ) -> Result<Response<ValidateTokenResponse>, Status> {
        let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let answer = self.0.validate_token(authorization, &client_info(&request), &request.get_ref().token).await?;
        Ok(Response::new(answer))
    }

    async fn get_jwks(&self, _: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        let keys = self.0.jwks().iter().map(jwk_message).collect();
        Ok(Response::new(GetJwksResponse { keys }))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let sessions = self.0.list_sessions(&caller(&self.0, &request).await?).await?;
        Ok(Response::new(ListSessionsResponse { sessions }))
    }

    async fn revoke_session(
        &self,
        request: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        self.0.revoke_session(&caller(&self.0, &request).await?, &request.get_ref().session_id).await?;
        Ok(Response::new(RevokeSessionResponse {}))
    }

    async fn request_password_reset(
        &self,
        request: Request<RequestPasswordResetRequest>,
    ) -> Result<Response<RequestPasswordResetResponse>, Status> {
        self.0.request_password_reset(request.get_ref(), &client_info(&request)).await?;
        Ok(Response::new(RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<ResetPasswordRequest>,
    ) -> Result<Response<ResetPasswordResponse>, Status> {
        let ended = self.0.reset_password(request.get_ref(), &client_info(&request)).await?;
        Ok(Response::new(ResetPasswordResponse { sessions_ended: ended as i64 }))
    }
}

/// A JWK in the proto's flat shape: members a key type does not have are empty.
fn jwk_message(jwk: &jsonwebtoken::jwk::Jwk) -> Jwk {
    let json = serde_json::to_value(jwk).unwrap_or_default();
    let member = |name: &str| json.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    Jwk {
        kty: member("kty"),
        kid: member("kid"),
        r#use: member("use"),
        alg: member("alg"),
        n: member("n"),
        e: member("e"),
        crv: member("crv"),
        x: member("x"),
        y: member("y"),
    }
}
