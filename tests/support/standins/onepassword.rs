//! 1Password Connect's item API: `GET /v1/vaults/<vaultUUID>/items/<itemUUID>` with
//! `Authorization: Bearer <token>`, answering the item with its `fields`. Errors are
//! Connect's `{"status": …, "message": …}`: 401 for a missing or wrong token, 404 for an
//! unknown vault or item.

use serde_json::{json, Value};

use super::cli::{Run, HOSTILE};
use super::http::{Request, Response, Server};

/// One item in one vault, readable with one token.
#[derive(Clone, Debug)]
pub struct Connect {
    pub token: String,
    pub vault_id: String,
    pub item_id: String,
    /// The item's `fields` array, as Connect returns it.
    pub fields: Value,
}

pub fn start(c: Connect) -> Server {
    Server::start(move |req| answer(&c, req))
}

fn error(status: u16, message: &str) -> Response {
    Response::json(status, json!({ "status": status, "message": message }))
}

fn answer(c: &Connect, req: &Request) -> Response {
    match req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
    {
        Some(t) if t == c.token => {}
        _ => return error(401, "Invalid token signature"),
    }
    let segs = req.segments();
    let [v1, vaults, vault, items, item] = segs.as_slice() else {
        return error(404, "Not Found");
    };
    if req.method != "GET" || v1 != "v1" || vaults != "vaults" || items != "items" {
        return error(404, "Not Found");
    }
    if *vault != c.vault_id {
        return error(404, "vault not found");
    }
    if *item != c.item_id {
        return error(404, "item not found");
    }
    Response::json(
        200,
        json!({
            "id": c.item_id,
            "title": "Production database",
            "vault": { "id": c.vault_id },
            "category": "LOGIN",
            "version": 4,
            "favorite": false,
            "tags": ["prod"],
            "sections": [{ "id": "add more", "label": "" }, { "id": "k7mjgd4tqzn3", "label": "Connection" }],
            "fields": c.fields,
            "urls": [{ "primary": true, "href": "https://db.example.com" }],
            "lastEditedBy": "DYGWG3H6IJEXTLUCTDDEF2CXRM",
            "createdAt": "2024-05-01T09:30:00Z",
            "updatedAt": "2024-05-02T10:00:00Z"
        }),
    )
}

// The tests' fixtures.

/// The Connect token, and the ids of the tests' vault and item.
pub const TOKEN: &str = "eyJhbGciOiJFUzI1NiIsImtpZCI6Im9wLWNvbm5lY3QifQ.op.connect.token";
pub const VAULT: &str = "5ve5wfpdjeoryv2j3zpnv4j7ua";
pub const ITEM: &str = "wcqxxa7ysfnbtmeqbivdsstzge";

/// The item, with labelled fields, one in a section, one without a value, and one
/// labelled [`HOSTILE`].
pub fn example(vault_id: &str, item_id: &str) -> Connect {
    Connect {
        token: TOKEN.into(),
        vault_id: vault_id.into(),
        item_id: item_id.into(),
        fields: json!([
            {"id": "username", "type": "STRING", "purpose": "USERNAME", "label": "username", "value": "app"},
            {"id": "password", "type": "CONCEALED", "purpose": "PASSWORD", "label": "password",
             "value": "pa$$ \"word\"\n", "entropy": 71.2},
            {"id": "notesPlain", "type": "STRING", "purpose": "NOTES", "label": "notesPlain"},
            {"id": "x7hq2", "section": {"id": "k7mjgd4tqzn3"}, "type": "CONCEALED", "label": "API key",
             "value": "ak-123"},
            {"id": "h0st1le", "type": "STRING", "label": HOSTILE, "value": "hostile-ok"}
        ]),
    }
}

/// A `test-run` of onepassword-connect.json.
pub fn run(url: &str, vault_id: &str, item_id: &str, field: &str, token: &str) -> Run {
    Run::new("onepassword-connect")
        .var("connectUrl", url)
        .var("vaultId", vault_id)
        .var("itemId", item_id)
        .var("field", field)
        .secret("op-connect-token", token)
}
