use tonic::{Request, Response, Status};

use super::{caller, client_info};
use crate::{
    core::Authd,
    pb::{
        ChangeEmailRequest, ChangeEmailResponse, ChangePasswordRequest, ChangePasswordResponse,
        ConfirmEmailChangeRequest, ConfirmEmailChangeResponse, DeleteMeRequest, DeleteMeResponse, GetMeRequest,
        GetMyActivityRequest, GetMyActivityResponse, RegisterUserRequest, RegisterUserResponse,
        ResendVerificationEmailRequest, ResendVerificationEmailResponse, UpdateMeRequest, User, VerifyEmailRequest,
        VerifyEmailResponse, user_service_server::UserService,
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
        Ok(Response::new(RegisterUserResponse { user }))
    }

    async fn get_me(&self, request: Request<GetMeRequest>) -> Result<Response<User>, Status> {
        Ok(Response::new(self.0.me(&caller(&self.0, &request).await?)))
    }

    async fn get_my_activity(
        &self,
        request: Request<GetMyActivityRequest>,
    ) -> Result<Response<GetMyActivityResponse>, Status> {
        let caller = caller(&self.0, &request).await?;
        Ok(Response::new(self.0.my_activity(&caller, request.get_ref()).await?))
    }

    async fn update_me(&self, request: Request<UpdateMeRequest>) -> Result<Response<User>, Status> {
        Ok(Response::new(self.0.update_me(&caller(&self.0, &request).await?, request.get_ref()).await?))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let caller = caller(&self.0, &request).await?;
        let changed = self.0.change_password(&caller, request.get_ref()).await?;
        Ok(Response::new(ChangePasswordResponse {
            sessions_ended: changed.sessions_ended as i64,
            tokens: Some(changed.signed_in.tokens),
        }))
    }

    async fn delete_me(&self, request: Request<DeleteMeRequest>) -> Result<Response<DeleteMeResponse>, Status> {
        self.0.delete_me(&caller(&self.0, &request).await?, request.get_ref()).await?;
        Ok(Response::new(DeleteMeResponse {}))
    }

    async fn verify_email(
        &self,
        request: Request<VerifyEmailRequest>,
    ) -> Result<Response<VerifyEmailResponse>, Status> {
        self.0.verify_email(request.get_ref(), &client_info(&request)).await?;
        Ok(Response::new(VerifyEmailResponse {}))
    }

    async fn resend_verification_email(
        &self,
        request: Request<ResendVerificationEmailRequest>,
    ) -> Result<Response<ResendVerificationEmailResponse>, Status> {
        self.0.resend_verification(request.get_ref(), &client_info(&request)).await?;
        Ok(Response::new(ResendVerificationEmailResponse {}))
    }

    async fn change_email(
        &self,
        request: Request<ChangeEmailRequest>,
    ) -> Result<Response<ChangeEmailResponse>, Status> {
        self.0.change_email(&caller(&self.0, &request).await?, request.get_ref()).await?;
        Ok(Response::new(ChangeEmailResponse {}))
    }

    async fn confirm_email_change(
        &self,
        request: Request<ConfirmEmailChangeRequest>,
    ) -> Result<Response<ConfirmEmailChangeResponse>, Status> {
        let ended = self.0.confirm_email_change(request.get_ref(), &client_info(&request)).await?;
        Ok(Response::new(ConfirmEmailChangeResponse { sessions_ended: ended as i64 }))
    }
}
