//! Pins the generated CRD: the chart's committed YAML must equal what the types render, and
//! the schema must carry the validation the API promises.

use std::path::PathBuf;

use kube::CustomResourceExt;
use podrestore_crds::{CHART_CRD_PATH, REGENERATE_COMMAND, crd_yaml, v1alpha1::PodRestore};
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = serde_json::to_value(PodRestore::crd()).expect("crd serializes");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn committed_chart_yaml_matches_the_types() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CHART_CRD_PATH);
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read {}: {err}; run `{REGENERATE_COMMAND}`",
            path.display()
        )
    });
    let generated = crd_yaml().expect("crd renders");
    assert!(
        committed == generated,
        "{CHART_CRD_PATH} is out of date with crds/src/v1alpha1.rs; run `{REGENERATE_COMMAND}` and commit the result"
    );
}

#[test]
fn spec_is_immutable_and_required() {
    let schema = schema();
    let spec = &schema["properties"]["spec"];
    assert_eq!(
        spec["x-kubernetes-validations"][0]["rule"],
        json!("self == oldSelf")
    );
    assert_eq!(spec["required"], json!(["checkpoint", "target"]));
    assert!(
        schema["required"]
            .as_array()
            .expect("root has required fields")
            .contains(&json!("spec"))
    );
}

#[test]
fn checkpoint_source_is_one_of() {
    let source = &schema()["properties"]["spec"]["properties"]["checkpoint"];
    assert_eq!(
        source["x-kubernetes-validations"][0]["rule"],
        json!("[has(self.archive), has(self.podCheckpoint)].filter(x, x).size() == 1")
    );
    assert_eq!(
        source["properties"]["podCheckpoint"]["required"],
        json!(["name"])
    );
    let archive = &source["properties"]["archive"];
    assert_eq!(archive["required"], json!(["nodeName", "path"]));
    let rules: Vec<&Value> = archive["properties"]["path"]["x-kubernetes-validations"]
        .as_array()
        .expect("path has rules")
        .iter()
        .map(|r| &r["rule"])
        .collect();
    assert_eq!(rules.len(), 2, "absolute path and no '..' segments");
}

#[test]
fn options_have_enums_bounds_and_defaults() {
    let options = &schema()["properties"]["spec"]["properties"]["options"]["properties"];
    assert_eq!(
        options["manageCgroupsMode"]["enum"],
        json!(["Soft", "Full", "Strict", "Ignore"])
    );
    assert_eq!(options["manageCgroupsMode"]["default"], json!("Soft"));
    assert_eq!(
        options["networkLock"]["enum"],
        json!(["Iptables", "Nftables", "Skip"])
    );
    assert_eq!(options["networkLock"]["default"], json!("Iptables"));
    // JSONSchemaProps keeps bounds as floats.
    assert_eq!(options["timeoutSeconds"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(options["timeoutSeconds"]["maximum"].as_f64(), Some(3600.0));
    assert_eq!(options["timeoutSeconds"]["default"], json!(300));
}

#[test]
fn conditions_merge_by_type() {
    let conditions = &schema()["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], json!("map"));
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
}

#[test]
fn every_field_is_documented() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        if let Some(props) = schema["properties"].as_object() {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                let skip = matches!(name.as_str(), "apiVersion" | "kind" | "metadata");
                if !skip && prop["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(here.clone());
                }
                // Conditions are metav1.Condition, documented upstream.
                if name != "conditions" {
                    walk(&here, prop, missing);
                }
            }
        }
    }
    let mut missing = Vec::new();
    walk("", &schema(), &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

mod pod_checkpoint {
    use super::*;
    use podrestore_crds::{
        CHART_CHECKPOINT_CRD_PATH, checkpoint_crd_yaml, podcheckpoint::PodCheckpoint,
    };

    fn schema() -> Value {
        let crd = serde_json::to_value(PodCheckpoint::crd()).expect("crd serializes");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    #[test]
    fn committed_chart_yaml_matches_the_types() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(CHART_CHECKPOINT_CRD_PATH);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|err| {
            panic!(
                "cannot read {}: {err}; run `{REGENERATE_COMMAND}`",
                path.display()
            )
        });
        let generated = checkpoint_crd_yaml().expect("crd renders");
        assert!(
            committed == generated,
            "{CHART_CHECKPOINT_CRD_PATH} is out of date with crds/src/podcheckpoint.rs; run `{REGENERATE_COMMAND}` and commit the result"
        );
    }

    #[test]
    fn spec_is_immutable_with_bounds() {
        let crd = serde_json::to_value(PodCheckpoint::crd()).expect("crd serializes");
        assert_eq!(crd["spec"]["scope"], json!("Namespaced"));
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["pcp"]));
        let spec = &schema()["properties"]["spec"];
        assert_eq!(
            spec["x-kubernetes-validations"][0]["rule"],
            json!("self == oldSelf")
        );
        assert_eq!(spec["required"], json!(["podName"]));
        let timeout = &spec["properties"]["timeoutSeconds"];
        assert_eq!(timeout["default"], json!(60));
        assert_eq!(timeout["minimum"].as_f64(), Some(1.0));
        assert_eq!(timeout["maximum"].as_f64(), Some(3600.0));
    }

    #[test]
    fn status_records_the_archive_and_its_pod() {
        let status = &schema()["properties"]["status"]["properties"];
        for field in [
            "nodeName",
            "archivePath",
            "sha256",
            "size",
            "checkpointTime",
            "pod",
            "container",
            "criuVersion",
        ] {
            assert!(status[field].is_object(), "status.{field} is missing");
        }
        assert_eq!(
            status["pod"]["required"],
            json!(["name", "namespace", "uid"])
        );
        assert_eq!(status["conditions"]["x-kubernetes-list-type"], json!("map"));
    }

    #[test]
    fn every_field_is_documented() {
        fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
            if let Some(props) = schema["properties"].as_object() {
                for (name, prop) in props {
                    let here = format!("{path}.{name}");
                    let skip = matches!(name.as_str(), "apiVersion" | "kind" | "metadata");
                    if !skip && prop["description"].as_str().is_none_or(str::is_empty) {
                        missing.push(here.clone());
                    }
                    if name != "conditions" {
                        walk(&here, prop, missing);
                    }
                }
            }
        }
        let mut missing = Vec::new();
        walk("", &schema(), &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }
}
