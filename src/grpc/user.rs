use tonic::{Request, Response, Status};

use super::{authorization, client_info};
use crate::{
    core::Authd,
    pb::{GetMeRequest, RegisterUserRequest, RegisterUserResponse, User, user_service_server::UserService},
};

pub struct UserApi(pub Authd);

#[tonic::async_trait]
impl UserService for UserApi {
    async fn register_user(
        &self,
        request: Request<RegisterUserRequest>,
    ) -> Result<Response<RegisterUserResponse>, Status> {
        let user = self.0.register(request.get_ref(), &client_info(&request)).await?;
        Ok(Response::new(RegisterUserResponse { user: Some(user) }))
    }

    async fn get_me(&self, request: Request<GetMeRequest>) -> Result<Response<User>, Status> {
        Ok(Response::new(self.0.me(authorization(&request)).await?))
    }
}
