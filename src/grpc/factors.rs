use tonic::{Request, Response, Status};

use super::caller;
use crate::{
    core::Authd,
    pb::{
        ActivateTotpRequest, ActivateTotpResponse, EnrollTotpRequest, EnrollTotpResponse,
        FinishPasskeyRegistrationRequest, FinishPasskeyRegistrationResponse, ListFactorsRequest, ListFactorsResponse,
        RegenerateRecoveryCodesRequest, RegenerateRecoveryCodesResponse, RemoveFactorRequest, RemoveFactorResponse,
        StartPasskeyRegistrationRequest, StartPasskeyRegistrationResponse, factor_service_server::FactorService,
    },
};

pub struct FactorApi(pub Authd);

#[tonic::async_trait]
impl FactorService for FactorApi {
    async fn enroll_totp(&self, request: Request<EnrollTotpRequest>) -> Result<Response<EnrollTotpResponse>, Status> {
        let caller = caller(&self.0, &request).await?;
        Ok(Response::new(self.0.enroll_totp(&caller, request.get_ref()).await?))
    }

    async fn activate_totp(
        &self,
        request: Request<ActivateTotpRequest>,
    ) -> Result<Response<ActivateTotpResponse>, Status> {
        let caller = caller(&self.0, &request).await?;
        let activated = self.0.activate_totp(&caller, request.get_ref()).await?;
        Ok(Response::new(ActivateTotpResponse {
            recovery_codes: activated.recovery_codes,
            tokens: Some(activated.signed_in.tokens),
            sessions_ended: activated.sessions_ended as i64,
        }))
    }

    async fn list_factors(
        &self,
        request: Request<ListFactorsRequest>,
    ) -> Result<Response<ListFactorsResponse>, Status> {
        Ok(Response::new(self.0.list_factors(&caller(&self.0, &request).await?).await?))
    }

    async fn remove_factor(
        &self,
        request: Request<RemoveFactorRequest>,
    ) -> Result<Response<RemoveFactorResponse>, Status> {
        let caller = caller(&self.0, &request).await?;
        let factors_left = self.0.remove_factor(&caller, request.get_ref()).await?;
        Ok(Response::new(RemoveFactorResponse { factors_left }))
    }

    async fn regenerate_recovery_codes(
        &self,
        request: Request<RegenerateRecoveryCodesRequest>,
    ) -> Result<Response<RegenerateRecoveryCodesResponse>, Status> {
        let caller = caller(&self.0, &request).await?;
        let recovery_codes = self.0.regenerate_recovery_codes(&caller, request.get_ref()).await?;
        Ok(Response::new(RegenerateRecoveryCodesResponse { recovery_codes }))
    }

    async fn start_passkey_registration(
        &self,
        request: Request<StartPasskeyRegistrationRequest>,
    ) -> Result<Response<StartPasskeyRegistrationResponse>, Status> {
        let caller = caller(&self.0, &request).await?;
        Ok(Response::new(self.0.start_passkey_registration(&caller, request.get_ref()).await?))
    }

    async fn finish_passkey_registration(
        &self,
        request: Request<FinishPasskeyRegistrationRequest>,
    ) -> Result<Response<FinishPasskeyRegistrationResponse>, Status> {
        let caller = caller(&self.0, &request).await?;
        let registered = self.0.finish_passkey_registration(&caller, request.get_ref()).await?;
        Ok(Response::new(FinishPasskeyRegistrationResponse {
            factor_id: registered.factor_id.to_string(),
            recovery_codes: registered.recovery_codes,
            tokens: Some(registered.signed_in.tokens),
            sessions_ended: registered.sessions_ended as i64,
        }))
    }
}
