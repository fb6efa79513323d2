//! Naming every field where a saved config differs from the one asked for.

/// A field whose value differs between a saved config and the one asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigDifference {
    /// Dotted path, e.g. `training.epochs`.
    pub field: String,
    pub there: String,
    pub here: String,
}

impl std::fmt::Display for ConfigDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} there, {} here",
            self.field, self.there, self.here
        )
    }
}

/// Every leaf field where `there` and `here` differ (missing fields show as `absent`).
pub fn config_differences(
    there: &serde_json::Value,
    here: &serde_json::Value,
) -> Vec<ConfigDifference> {
    fn walk(
        path: &str,
        there: Option<&serde_json::Value>,
        here: Option<&serde_json::Value>,
        out: &mut Vec<ConfigDifference>,
    ) {
        use serde_json::Value;
        match (there, here) {
            (Some(Value::Object(a)), Some(Value::Object(b))) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(&child, a.get(key), b.get(key), out);
                }
            }
            (a, b) if a == b => {}
            (a, b) => {
                let show = |v: Option<&Value>| v.map_or("absent".to_string(), Value::to_string);
                out.push(ConfigDifference {
                    field: path.to_string(),
                    there: show(a),
                    here: show(b),
                });
            }
        }
    }
    let mut out = Vec::new();
    walk("", Some(there), Some(here), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_every_leaf() {
        let there = serde_json::json!({"training": {"epochs": 8, "lr": 0.001}, "seeds": [0, 1]});
        let here =
            serde_json::json!({"training": {"epochs": 12, "lr": 0.001}, "seeds": [0], "new": true});
        let found: Vec<String> = config_differences(&there, &here)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            vec![
                "new: absent there, true here",
                "seeds: [0,1] there, [0] here",
                "training.epochs: 8 there, 12 here"
            ]
        );
    }
}
