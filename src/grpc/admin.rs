use tonic::{Request, Response, Status};

use super::client_info;
use crate::{
    core::{Admin, Authd},
    pb::{
        CreateClientRequest, CreateClientResponse, CreateUserRequest, CreateUserResponse, DeleteClientRequest,
        DeleteClientResponse, DeleteUserRequest, DeleteUserResponse, DisableUserRequest, DisableUserResponse,
        EnableUserRequest, EnableUserResponse, GetUserRequest, GetUserResponse, ListAuditEventsRequest,
        ListAuditEventsResponse, ListClientsRequest, ListClientsResponse, ListUsersRequest, ListUsersResponse,
        RevokeUserSessionsRequest, RevokeUserSessionsResponse, RotateClientSecretRequest, RotateClientSecretResponse,
        SetUserRolesRequest, SetUserRolesResponse, UpdateUserRequest, UpdateUserResponse,
        admin_service_server::AdminService,
    },
};

pub struct AdminApi(pub Authd);

/// The caller of an admin call, from its `authorization` metadata.
async fn admin<T>(authd: &Authd, request: &Request<T>) -> Result<Admin, Status> {
    let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
    Ok(authd.authorize_admin(authorization, client_info(request)).await?)
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_users(&self, request: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        let admin = admin(&self.0, &request).await?;
        Ok(Response::new(self.0.list_users(&admin, request.get_ref()).await?))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        let admin = admin(&self.0, &request).await?;
        Ok(Response::new(self.0.get_user(&admin, request.get_ref().user_id).await?))
    }

    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<CreateUserResponse>, Status> {
        let admin = admin(&self.0, &request).await?;
        Ok(Response::new(self.0.create_user(&admin, request.get_ref()).await?))
    }

    async fn update_user(&self, request: Request<UpdateUserRequest>) -> Result<Response<UpdateUserResponse>, Status> {
        let admin = admin(&self.0, &request).await?;
        Ok(Response::new(self.0.update_user(&admin, request.get_ref()).await?))
    }

    async fn disable_user(
        &self,
        request: Request<DisableUserRequest>,
    ) -> Result<Response<DisableUserResponse>, Status> {
        let admin = admin(&self.0, &request).await?;
        let ended = self.0.disable_user(&admin, request.get_ref().user_id).await?;
        Ok(Response::new(DisableUserResponse { sessions_ended: ended as i64 }))
    }

    async fn enable_user(&self, request: Request<EnableUserRequest>) -> Result<Response<EnableUserResponse>, Status> {
        let admin = admin(&self.0, &request).await?;
        self.0.enable_user(&admin, request.get_ref().user_id).await?;
        Ok(Response::new(EnableUserResponse {}))
    }

    async fn delete_user(&self, request: Request<DeleteUserRequest>) -> Result<Response<DeleteUserResponse>, Status> {
        let admin = admin(&self.0, &request).await?;
        self.0.delete_user(&admin, request.get_ref().user_id).await?;
        Ok(Response::new(DeleteUserResponse {}))
    }

    async fn revoke_user_sessions(
        &self,
        request: Request<RevokeUserSessionsRequest>,
    ) -> Result<Response<RevokeUserSessionsResponse>, Status> {
        let admin = admin(&self.0, &request).await?;
        let ended = self.0.revoke_user_sessions(&admin, request.get_ref().user_id).await?;
        Ok(Response::new(RevokeUserSessionsResponse { sessions_ended: ended as i64 }))
    }

    async fn set_user_roles(
        &self,
        request: Request<SetUserRolesRequest>,
    ) -> Result<Response<SetUserRolesResponse>, Status> {
        let admin = admin(&self.0, &request).await?;
        let req = request.get_ref();
        let roles = self.0.set_user_roles(&admin, req.user_id, &req.roles).await?;
        Ok(Response::new(SetUserRolesResponse { roles }))
    }

    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let admin = admin(&self.0, &request).await?;
        Ok(Response::new(self.0.list_audit_events(&admin, request.get_ref()).await?))
    }

    async fn list_clients(
        &self,
        request: Request<ListClientsRequest>,
    ) -> Result<Response<ListClientsResponse>, Status> {
        let admin = admin(&self.0, &request).await?;
        Ok(Response::new(self.0.list_clients(&admin).await?))
    }

    async fn create_client(
        &self,
        request: Request<CreateClientRequest>,
    ) -> Result<Response<CreateClientResponse>, Status> {
        let admin = admin(&self.0, &request).await?;
        Ok(Response::new(self.0.create_client(&admin, request.get_ref()).await?))
    }

    async fn rotate_client_secret(
        &self,
        request: Request<RotateClientSecretRequest>,
    ) -> Result<Response<RotateClientSecretResponse>, Status> {
        let admin = admin(&self.0, &request).await?;
        Ok(Response::new(self.0.rotate_client_secret(&admin, request.get_ref()).await?))
    }

    async fn delete_client(
        &self,
        request: Request<DeleteClientRequest>,
    ) -> Result<Response<DeleteClientResponse>, Status> {
        let admin = admin(&self.0, &request).await?;
        self.0.delete_client(&admin, &request.get_ref().client_id).await?;
        Ok(Response::new(DeleteClientResponse {}))
    }
}
