//! The GraphQL API: Harness's secret-manager and secret operations, templates (this
//! project's extension), `resolveSecret` for consumers, and the audit trail.
//!
//! Resolvers are thin: they check the caller's role, hand the input to
//! [`ControlPlane`], record an audit event for every mutation (refused ones included) and
//! turn an [`ApiError`] into a GraphQL error whose `extensions.code` is its stable code.
//! The HTTP side (authentication, body limits, error scrubbing) is
//! [`crate::manager::api`].

pub mod inputs;
pub mod types;

use async_graphql::{
    Context, EmptySubscription, Enum, ErrorExtensions, InputObject, Object, Schema,
};

use crate::manager::audit::Trail;
use crate::manager::auth::{Caller, Role};
use crate::manager::control::{page_bounds, ApiError, ControlPlane};
use crate::manager::store::ObjectKind;
use inputs::*;
use types::*;

/// The schema type.
pub type ApiSchema = Schema<Query, Mutation, EmptySubscription>;

/// Deepest selection accepted (GraphiQL's introspection query needs 13).
pub const MAX_DEPTH: usize = 16;

/// Largest query complexity accepted (each field counts one).
pub const MAX_COMPLEXITY: usize = 1000;

/// Build the schema around `cp`. The caller is added per request.
pub fn schema(cp: ControlPlane) -> ApiSchema {
    builder().data(cp).finish()
}

/// The schema with its limits, without data.
fn builder() -> async_graphql::SchemaBuilder<Query, Mutation, EmptySubscription> {
    Schema::build(Query, Mutation, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(32)
        .limit_directives(8)
}

/// The schema in SDL (for docs and clients).
pub fn sdl() -> String {
    Schema::build(Query, Mutation, EmptySubscription)
        .finish()
        .sdl()
}

fn gql(e: ApiError) -> async_graphql::Error {
    let code = e.code;
    async_graphql::Error::new(e.message).extend_with(|_, ext| ext.set("code", code))
}

fn env<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<(&'a ControlPlane, &'a Caller)> {
    let cp = ctx.data::<ControlPlane>()?;
    let caller = ctx.data::<Caller>().map_err(|_| {
        gql(ApiError::new(
            "unauthenticated",
            "a valid x-api-key header is required",
        ))
    })?;
    Ok((cp, caller))
}

fn admin(caller: &Caller, op: &str) -> Result<(), ApiError> {
    match caller.role {
        Role::Admin => Ok(()),
        Role::Resolve => Err(ApiError::forbidden(op)),
    }
}

/// Record the audit event for `trail` and convert the result.
async fn finish<T>(
    cp: &ControlPlane,
    trail: Trail,
    r: Result<T, ApiError>,
) -> async_graphql::Result<T> {
    let outcome = match &r {
        Ok(_) => "ok",
        Err(e) => e.code,
    };
    cp.auditor().finish(trail, outcome).await;
    r.map_err(gql)
}

/// `SecretManagerFilter` operators on ids.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum IdOperator {
    /// Equal to the one value.
    Equals,
    /// One of the values.
    In,
    /// Any.
    NotNull,
    /// Unsupported here; treated as `IN`.
    Like,
}

/// Operators on enums.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum EnumOperator {
    /// Equal.
    Equals,
    /// One of.
    In,
}

/// `IdFilter`.
#[derive(InputObject)]
pub struct IdFilter {
    /// How to compare.
    pub operator: Option<IdOperator>,
    /// The ids.
    pub values: Option<Vec<Option<String>>>,
}

/// `SecretManagerTypeFilter`.
#[derive(InputObject)]
pub struct SecretManagerTypeFilter {
    /// How to compare.
    pub operator: Option<EnumOperator>,
    /// The types.
    pub values: Option<Vec<Option<SecretManagerType>>>,
}

/// `SecretManagerFilter`.
#[derive(InputObject)]
pub struct SecretManagerFilter {
    /// By type.
    #[graphql(name = "type")]
    pub type_: Option<SecretManagerTypeFilter>,
    /// By id.
    pub secret_manager: Option<IdFilter>,
}

impl SecretManagerFilter {
    fn matches(&self, id: &str) -> bool {
        let type_ok = self.type_.as_ref().map_or(true, |t| {
            t.values
                .iter()
                .flatten()
                .flatten()
                .any(|v| *v == SecretManagerType::Custom)
        });
        let id_ok = self.secret_manager.as_ref().map_or(true, |f| {
            f.operator == Some(IdOperator::NotNull)
                || f.values.iter().flatten().flatten().any(|v| v == id)
        });
        type_ok && id_ok
    }
}

/// Read queries: any authenticated key.
pub struct Query;

#[Object]
impl Query {
    /// A secret manager by id.
    async fn secret_manager(
        &self,
        ctx: &Context<'_>,
        secret_manager_id: String,
    ) -> async_graphql::Result<Option<SecretManager>> {
        let (cp, _) = env(ctx)?;
        let r = cp
            .find(ObjectKind::SecretManager, &secret_manager_id)
            .await
            .map_err(gql)?;
        Ok(r.as_ref().map(SecretManager::from_row))
    }

    /// A secret manager by name.
    async fn secret_manager_by_name(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> async_graphql::Result<Option<SecretManager>> {
        let (cp, _) = env(ctx)?;
        let r = cp
            .find_by_name(ObjectKind::SecretManager, &name)
            .await
            .map_err(gql)?;
        Ok(r.as_ref().map(SecretManager::from_row))
    }

    /// Secret managers, oldest first.
    async fn secret_managers(
        &self,
        ctx: &Context<'_>,
        filters: Option<Vec<Option<SecretManagerFilter>>>,
        limit: i32,
        offset: Option<i32>,
    ) -> async_graphql::Result<Option<SecretManagerConnection>> {
        let (cp, _) = env(ctx)?;
        let filters: Vec<SecretManagerFilter> = filters.into_iter().flatten().flatten().collect();
        let (items, total) = if filters.is_empty() {
            let page = cp
                .list(ObjectKind::SecretManager, limit, offset)
                .await
                .map_err(gql)?;
            (page.items, page.total)
        } else {
            let (lim, off) = page_bounds(limit, offset).map_err(gql)?;
            let all = cp
                .store()
                .list(ObjectKind::SecretManager, u32::MAX, 0)
                .await
                .map_err(|e| gql(e.into()))?;
            let hits: Vec<_> = all
                .items
                .into_iter()
                .filter(|r| filters.iter().all(|f| f.matches(&r.id)))
                .collect();
            let total = hits.len() as u64;
            (
                hits.into_iter()
                    .skip(off as usize)
                    .take(lim as usize)
                    .collect(),
                total,
            )
        };
        Ok(Some(SecretManagerConnection {
            page_info: Some(PageInfo::new(limit, offset, items.len(), total)),
            nodes: Some(
                items
                    .iter()
                    .map(|r| Some(SecretManager::from_row(r)))
                    .collect(),
            ),
        }))
    }

    /// A secret by id and type.
    async fn secret(
        &self,
        ctx: &Context<'_>,
        secret_id: String,
        secret_type: SecretType,
    ) -> async_graphql::Result<Option<Secret>> {
        let (cp, _) = env(ctx)?;
        let kind = crate::manager::control::secrets::kind_of(secret_type).map_err(gql)?;
        let r = cp.find(kind, &secret_id).await.map_err(gql)?;
        Ok(r.and_then(Secret::from_row))
    }

    /// A secret by name and type.
    async fn secret_by_name(
        &self,
        ctx: &Context<'_>,
        name: String,
        secret_type: SecretType,
    ) -> async_graphql::Result<Option<Secret>> {
        let (cp, _) = env(ctx)?;
        let kind = crate::manager::control::secrets::kind_of(secret_type).map_err(gql)?;
        let r = cp.find_by_name(kind, &name).await.map_err(gql)?;
        Ok(r.and_then(Secret::from_row))
    }

    /// A template by id.
    async fn template(
        &self,
        ctx: &Context<'_>,
        template_id: String,
    ) -> async_graphql::Result<Option<Template>> {
        let (cp, _) = env(ctx)?;
        let r = cp
            .find(ObjectKind::Template, &template_id)
            .await
            .map_err(gql)?;
        Ok(r.as_ref().map(Template::from_row))
    }

    /// A template by name.
    async fn template_by_name(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> async_graphql::Result<Option<Template>> {
        let (cp, _) = env(ctx)?;
        let r = cp
            .find_by_name(ObjectKind::Template, &name)
            .await
            .map_err(gql)?;
        Ok(r.as_ref().map(Template::from_row))
    }

    /// Templates, oldest first.
    async fn templates(
        &self,
        ctx: &Context<'_>,
        limit: i32,
        offset: Option<i32>,
    ) -> async_graphql::Result<Option<TemplateConnection>> {
        let (cp, _) = env(ctx)?;
        let page = cp
            .list(ObjectKind::Template, limit, offset)
            .await
            .map_err(gql)?;
        Ok(Some(TemplateConnection {
            page_info: Some(PageInfo::new(limit, offset, page.items.len(), page.total)),
            nodes: Some(
                page.items
                    .iter()
                    .map(|r| Some(Template::from_row(r)))
                    .collect(),
            ),
        }))
    }

    /// The audit trail, newest first.
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        limit: i32,
        offset: Option<i32>,
    ) -> async_graphql::Result<Option<AuditEventConnection>> {
        let (cp, _) = env(ctx)?;
        let (lim, off) = page_bounds(limit, offset).map_err(gql)?;
        let page = cp
            .store()
            .list_audit(lim, off)
            .await
            .map_err(|e| gql(e.into()))?;
        Ok(Some(AuditEventConnection {
            page_info: Some(PageInfo::new(limit, offset, page.items.len(), page.total)),
            nodes: Some(
                page.items
                    .into_iter()
                    .map(AuditEvent::from_record)
                    .collect(),
            ),
        }))
    }
}

/// Mutations: `admin` keys, except `resolveSecret`.
pub struct Mutation;

#[Object]
impl Mutation {
    /// Create a Custom Secrets Manager; validated by running its script with the test
    /// values.
    async fn create_secret_manager(
        &self,
        ctx: &Context<'_>,
        input: CreateSecretManagerInput,
    ) -> async_graphql::Result<Option<UpsertSecretManagerPayload>> {
        let (cp, caller) = env(ctx)?;
        let op = "createSecretManager";
        let mut trail = Trail::new(caller, op);
        let cmid = input.client_mutation_id.clone();
        let r = match admin(caller, op) {
            Ok(()) => cp.create_manager(input, &mut trail).await,
            Err(e) => Err(e),
        };
        let row = finish(cp, trail, r).await?;
        Ok(Some(UpsertSecretManagerPayload {
            client_mutation_id: cmid,
            secret_manager: Some(SecretManager::from_row(&row)),
        }))
    }

    /// Update a Custom Secrets Manager: only the fields given change; validated again.
    async fn update_secret_manager(
        &self,
        ctx: &Context<'_>,
        input: UpdateSecretManagerInput,
    ) -> async_graphql::Result<Option<UpsertSecretManagerPayload>> {
        let (cp, caller) = env(ctx)?;
        let op = "updateSecretManager";
        let mut trail = Trail::new(caller, op);
        let cmid = input.client_mutation_id.clone();
        let r = match admin(caller, op) {
            Ok(()) => cp.update_manager(input, &mut trail).await,
            Err(e) => Err(e),
        };
        let row = finish(cp, trail, r).await?;
        Ok(Some(UpsertSecretManagerPayload {
            client_mutation_id: cmid,
            secret_manager: Some(SecretManager::from_row(&row)),
        }))
    }

    /// Delete a Custom Secrets Manager; refused while secrets use it.
    async fn delete_secret_manager(
        &self,
        ctx: &Context<'_>,
        input: DeleteSecretManagerInput,
    ) -> async_graphql::Result<Option<DeleteSecretManagerPayload>> {
        let (cp, caller) = env(ctx)?;
        let op = "deleteSecretManager";
        let mut trail = Trail::new(caller, op);
        let r = match admin(caller, op) {
            Ok(()) => {
                cp.delete_manager(&input.secret_manager_id, &mut trail)
                    .await
            }
            Err(e) => Err(e),
        };
        finish(cp, trail, r).await?;
        Ok(Some(DeleteSecretManagerPayload {
            client_mutation_id: input.client_mutation_id,
        }))
    }

    /// Create an encrypted text or an SSH credential.
    async fn create_secret(
        &self,
        ctx: &Context<'_>,
        input: CreateSecretInput,
    ) -> async_graphql::Result<Option<CreateSecretPayload>> {
        let (cp, caller) = env(ctx)?;
        let op = "createSecret";
        let mut trail = Trail::new(caller, op);
        let cmid = input.client_mutation_id.clone();
        let r = match admin(caller, op) {
            Ok(()) => cp.create_secret(input, &mut trail).await,
            Err(e) => Err(e),
        };
        let row = finish(cp, trail, r).await?;
        Ok(Some(CreateSecretPayload {
            client_mutation_id: cmid,
            secret: Secret::from_row(row),
        }))
    }

    /// Update a secret: only the fields given change.
    async fn update_secret(
        &self,
        ctx: &Context<'_>,
        input: UpdateSecretInput,
    ) -> async_graphql::Result<Option<UpdateSecretPayload>> {
        let (cp, caller) = env(ctx)?;
        let op = "updateSecret";
        let mut trail = Trail::new(caller, op);
        let cmid = input.client_mutation_id.clone();
        let r = match admin(caller, op) {
            Ok(()) => cp.update_secret(input, &mut trail).await,
            Err(e) => Err(e),
        };
        let row = finish(cp, trail, r).await?;
        Ok(Some(UpdateSecretPayload {
            client_mutation_id: cmid,
            secret: Secret::from_row(row),
        }))
    }

    /// Delete a secret; refused while a manager or credential uses it.
    async fn delete_secret(
        &self,
        ctx: &Context<'_>,
        input: DeleteSecretInput,
    ) -> async_graphql::Result<Option<DeleteSecretPayload>> {
        let (cp, caller) = env(ctx)?;
        let op = "deleteSecret";
        let mut trail = Trail::new(caller, op);
        let r = match admin(caller, op) {
            Ok(()) => {
                cp.delete_secret(&input.secret_id, input.secret_type, &mut trail)
                    .await
            }
            Err(e) => Err(e),
        };
        finish(cp, trail, r).await?;
        Ok(Some(DeleteSecretPayload {
            client_mutation_id: input.client_mutation_id,
        }))
    }

    /// Create a shell-script template.
    async fn create_template(
        &self,
        ctx: &Context<'_>,
        input: CreateTemplateInput,
    ) -> async_graphql::Result<Option<UpsertTemplatePayload>> {
        let (cp, caller) = env(ctx)?;
        let op = "createTemplate";
        let mut trail = Trail::new(caller, op);
        let cmid = input.client_mutation_id.clone();
        let r = match admin(caller, op) {
            Ok(()) => cp.create_template(input, &mut trail).await,
            Err(e) => Err(e),
        };
        let row = finish(cp, trail, r).await?;
        Ok(Some(UpsertTemplatePayload {
            client_mutation_id: cmid,
            template: Some(Template::from_row(&row)),
        }))
    }

    /// Update a template; refused while secret managers use it.
    async fn update_template(
        &self,
        ctx: &Context<'_>,
        input: UpdateTemplateInput,
    ) -> async_graphql::Result<Option<UpsertTemplatePayload>> {
        let (cp, caller) = env(ctx)?;
        let op = "updateTemplate";
        let mut trail = Trail::new(caller, op);
        let cmid = input.client_mutation_id.clone();
        let r = match admin(caller, op) {
            Ok(()) => cp.update_template(input, &mut trail).await,
            Err(e) => Err(e),
        };
        let row = finish(cp, trail, r).await?;
        Ok(Some(UpsertTemplatePayload {
            client_mutation_id: cmid,
            template: Some(Template::from_row(&row)),
        }))
    }

    /// Delete a template; refused while secret managers use it.
    async fn delete_template(
        &self,
        ctx: &Context<'_>,
        input: DeleteTemplateInput,
    ) -> async_graphql::Result<Option<DeleteTemplatePayload>> {
        let (cp, caller) = env(ctx)?;
        let op = "deleteTemplate";
        let mut trail = Trail::new(caller, op);
        let r = match admin(caller, op) {
            Ok(()) => cp.delete_template(&input.template_id, &mut trail).await,
            Err(e) => Err(e),
        };
        finish(cp, trail, r).await?;
        Ok(Some(DeleteTemplatePayload {
            client_mutation_id: input.client_mutation_id,
        }))
    }

    /// Read a secret's value, within the usage scope of the secret and its manager
    /// (`admin` and `resolve` keys).
    async fn resolve_secret(
        &self,
        ctx: &Context<'_>,
        input: ResolveSecretInput,
    ) -> async_graphql::Result<Option<ResolveSecretPayload>> {
        let (cp, caller) = env(ctx)?;
        let mut trail = Trail::new(caller, "resolveSecret");
        let r = cp.resolve(&input, &mut trail).await;
        let value = finish(cp, trail, r).await?;
        Ok(Some(ResolveSecretPayload {
            client_mutation_id: input.client_mutation_id,
            value,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// graphql-js's introspection query (as GraphiQL sends it), with a deeper TypeRef.
    const INTROSPECTION: &str = "query IntrospectionQuery { __schema { queryType { name } mutationType { name } subscriptionType { name } types { ...FullType } directives { name description locations args { ...InputValue } } } }
fragment FullType on __Type { kind name description fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason } inputFields { ...InputValue } interfaces { ...TypeRef } enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason } possibleTypes { ...TypeRef } }
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } }";

    #[tokio::test]
    async fn graphiql_introspection_fits_the_limits() {
        let r = builder().finish().execute(INTROSPECTION).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let sdl = sdl();
        for t in [
            "interface Secret",
            "union SecretManagerConfig",
            "type SSHCredential",
            "input CustomSecretManagerInput",
            "inheritScopesFromSM",
            "inlineSSHKey",
        ] {
            assert!(sdl.contains(t), "{t} missing from the schema");
        }
    }
}
