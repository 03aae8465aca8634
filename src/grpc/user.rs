use tonic::{Request, Response, Status};

use super::{caller, client_info};
use crate::{
    core::Authd,
    pb::{
        ChangePasswordRequest, ChangePasswordResponse, DeleteMeRequest, DeleteMeResponse, GetMeRequest,
        RegisterUserRequest, RegisterUserResponse, UpdateMeRequest, User, user_service_server::UserService,
    },
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
        Ok(Response::new(self.0.me(&caller(&self.0, &request).await?)))
    }

    async fn update_me(&self, request: Request<UpdateMeRequest>) -> Result<Response<User>, Status> {
        Ok(Response::new(self.0.update_me(&caller(&self.0, &request).await?, request.get_ref()).await?))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let ended = self.0.change_password(&caller(&self.0, &request).await?, request.get_ref()).await?;
        Ok(Response::new(ChangePasswordResponse { sessions_ended: ended as i64 }))
    }

    async fn delete_me(&self, request: Request<DeleteMeRequest>) -> Result<Response<DeleteMeResponse>, Status> {
        self.0.delete_me(&caller(&self.0, &request).await?, request.get_ref()).await?;
        Ok(Response::new(DeleteMeResponse {}))
    }
}
