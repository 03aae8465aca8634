use tonic::{Request, Response, Status};

use super::client_info;
use crate::{
    core::Authd,
    pb::{LoginRequest, RefreshTokenRequest, TokenResponse, auth_service_server::AuthService},
};

pub struct AuthApi(pub Authd);

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<TokenResponse>, Status> {
        let signed_in = self.0.login(request.get_ref(), &client_info(&request)).await?;
        Ok(Response::new(signed_in.tokens))
    }

    async fn refresh_token(&self, request: Request<RefreshTokenRequest>) -> Result<Response<TokenResponse>, Status> {
        let signed_in = self.0.refresh(request.get_ref()).await?;
        Ok(Response::new(signed_in.tokens))
    }
}
