//! SharePoint REST answer shapes, shared by the SharePoint Server source and the
//! SharePoint Online site client: verbose (`{"d":{…}}`, `{"d":{"results":[…],
//! "__next":…}}`) and JSON light (`{…}`, `{"value":[…],"odata.nextLink":…}`) are
//! read by the same helpers, and OData string literals are built in one place.

use serde_json::Value;
use uuid::Uuid;

/// The entity of a single-object answer, verbose or light.
pub(crate) fn entity(v: &Value) -> &Value {
    v.get("d").unwrap_or(v)
}

/// `(results, next link)` of a collection answer, verbose or light.
pub(crate) fn collection(v: &Value) -> (Vec<Value>, Option<String>) {
    let (arr, next) = match v.get("d") {
        Some(d) => (d.get("results"), d.get("__next")),
        None => (
            v.get("value"),
            v.get("odata.nextLink").or_else(|| v.get("@odata.nextLink")),
        ),
    };
    (
        arr.and_then(Value::as_array).cloned().unwrap_or_default(),
        next.and_then(Value::as_str).map(str::to_owned),
    )
}

pub(crate) fn str_field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// Numbers arrive as numbers or strings (`"1234"`); null for folders.
pub(crate) fn num_field(v: &Value, k: &str) -> Option<u64> {
    match v.get(k)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(crate) fn bool_field(v: &Value, k: &str) -> bool {
    match v.get(k) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// A GUID, with or without braces; `None` when missing, empty or malformed.
pub(crate) fn guid_field(v: &Value, k: &str) -> Option<Uuid> {
    let s = str_field(v, k).trim_matches(['{', '}']);
    Uuid::try_parse(s).ok()
}

/// Percent-encodes a string for use inside a URL path or query value (`/` kept).
pub(crate) fn encode_component(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// `'…'` OData string literal: apostrophes doubled, then percent-encoded.
pub(crate) fn odata_string(s: &str) -> String {
    format!("'{}'", encode_component(&s.replace('\'', "''")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_collection_shapes() {
        let v = json!({"d":{"results":[{"a":1}],"__next":"http://x/next"}});
        assert_eq!(collection(&v).0.len(), 1);
        assert_eq!(collection(&v).1.as_deref(), Some("http://x/next"));
        let v = json!({"value":[{"a":1},{"a":2}],"odata.nextLink":"n"});
        assert_eq!(collection(&v).0.len(), 2);
        assert_eq!(collection(&v).1.as_deref(), Some("n"));
    }

    #[test]
    fn odata_literals() {
        assert_eq!(
            odata_string("/sites/a/Shared Documents/O'Neil #1 100%.txt"),
            "'/sites/a/Shared%20Documents/O%27%27Neil%20%231%20100%25.txt'"
        );
    }

    #[test]
    fn guids_with_or_without_braces() {
        let g = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";
        assert_eq!(
            guid_field(&json!({"Id": format!("{{{g}}}")}), "Id"),
            Uuid::try_parse(g).ok()
        );
        assert_eq!(guid_field(&json!({"Id": ""}), "Id"), None);
    }
}
