//! CyberArk's Central Credential Provider web service: `GET
//! /AIMWebService/api/Accounts?AppID=…&Safe=…[&Folder=…]&Object=…`, answering the
//! account with its password in `Content`. Errors are the CCP's `{"ErrorCode": …,
//! "ErrorMsg": …}`: 400 AIMWS030E for a query without AppID, 403 APPAP306E for an
//! application that is not allowed, 404 APPAP004E for no matching account.

use serde_json::json;

use super::http::{Request, Response, Server};

/// One account in a safe.
#[derive(Clone, Debug)]
pub struct Account {
    pub safe: String,
    /// `Root` unless the account is in a folder.
    pub folder: String,
    pub object: String,
    pub content: String,
}

/// A provider that serves one application id.
#[derive(Clone, Debug)]
pub struct Ccp {
    pub app_id: String,
    pub accounts: Vec<Account>,
}

pub fn start(ccp: Ccp) -> Server {
    Server::start(move |req| answer(&ccp, req))
}

fn error(status: u16, code: &str, message: &str) -> Response {
    Response::json(status, json!({ "ErrorCode": code, "ErrorMsg": message }))
}

fn answer(ccp: &Ccp, req: &Request) -> Response {
    if req.method != "GET" || req.raw_path != "/AIMWebService/api/Accounts" {
        return error(404, "AIMWS031E", "Resource not found.");
    }
    let Some(app) = req.param("AppID") else {
        return error(400, "AIMWS030E", "Invalid query format.");
    };
    if app != ccp.app_id {
        return error(
            403,
            "APPAP306E",
            &format!(
                "Authentication error for App ID [{app}]. Reason: APPAP008E Application \
                 [{app}] is not defined in the Vault."
            ),
        );
    }
    let safe = req.param("Safe").unwrap_or_default();
    let folder = req.param("Folder").unwrap_or_else(|| "Root".into());
    let object = req.param("Object").unwrap_or_default();
    let found = ccp
        .accounts
        .iter()
        .find(|a| a.safe == safe && a.folder == folder && a.object == object);
    let Some(a) = found else {
        return error(
            404,
            "APPAP004E",
            &format!(
                "Password object matching query [Safe={safe};Folder={folder};Object={object}] \
                 was not found (Diagnostic Info: 5). Please check that there is a password \
                 object that answers your query in the Vault and that both the Provider and \
                 the application user have the appropriate permissions needed in order to \
                 use the password."
            ),
        );
    };
    Response::json(
        200,
        json!({
            "Content": a.content,
            "CreationMethod": "PVWA",
            "Address": "db.example.com",
            "Safe": a.safe,
            "UserName": "svc_app",
            "Database": "orders",
            "Name": a.object,
            "PolicyID": "PostgreSQL",
            "DeviceType": "Database",
            "Folder": a.folder,
            "PasswordChangeInProcess": "False"
        }),
    )
}
