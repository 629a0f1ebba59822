//! The JSON Schema of every netsvc service's config, made from the very
//! types each plugin decodes (`netsvc schema --out docs/schema`). A test
//! fails when the checked-in files differ from the code.

use serde_json::Value;

/// (plugin type, schema) for every service, in a fixed order.
pub fn service_schemas() -> Vec<(&'static str, Value)> {
    crate::services::ALL
        .iter()
        .map(|s| {
            let mut v = (s.schema)();
            v["title"] = Value::String(s.name.to_string());
            (s.name, v)
        })
        .collect()
}

/// A schema's file: `<type>.schema.json`, pretty, ending in a newline.
pub fn file(plugin_type: &str, schema: &Value) -> (String, String) {
    let body = serde_json::to_string_pretty(schema).unwrap_or_default() + "\n";
    (format!("{plugin_type}.schema.json"), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_schemas_are_the_codes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema");
        for (t, schema) in service_schemas() {
            let (name, body) = file(t, &schema);
            let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            assert!(
                on_disk == body,
                "docs/schema/{name} differs from the code: run `netsvc schema --out docs/schema`"
            );
        }
    }

    #[test]
    fn a_schema_names_the_fields_users_write() {
        let all = service_schemas();
        let qos = &all.iter().find(|(t, _)| *t == "netsvc-qos").unwrap().1;
        assert!(qos["properties"]["egressRate"].is_object(), "{qos}");
        let vpn = &all.iter().find(|(t, _)| *t == "netsvc-vpn").unwrap().1;
        assert!(vpn["properties"]["peers"].is_object() && vpn["properties"]["podSubnet"].is_object());
    }
}
