//! Hand-written schemas for embedded Kubernetes types whose generated schema is too verbose
//! for a CRD (k8s-openapi repeats the full `Quantity` essay under every map value).

use schemars::{Schema, SchemaGenerator, json_schema};

/// `ResourceRequirements` as controller-gen writes it: `requests` and `limits` maps of
/// quantities (`500m`, `1Gi`, `2`), validated by the API server's quantity pattern.
pub fn resource_requirements(_: &mut SchemaGenerator) -> Schema {
    let quantity = json_schema!({
        "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        "x-kubernetes-int-or-string": true
    });
    json_schema!({
        "description": "Compute resources (`requests` and `limits` of `cpu`, `memory`, ...), as in a Pod's container.",
        "type": "object",
        "properties": {
            "limits": {
                "description": "Most of each resource the container may use.",
                "type": "object",
                "additionalProperties": quantity.clone()
            },
            "requests": {
                "description": "Resources reserved for the container; the scheduler places pods by them.",
                "type": "object",
                "additionalProperties": quantity
            }
        }
    })
}
