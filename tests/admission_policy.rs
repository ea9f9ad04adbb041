//! The chart's ValidatingAdmissionPolicy, evaluated with kube's client-side CEL (the `cel` crate
//! with the Kubernetes extension functions, as `kube::core::cel` ships them) on the requests the
//! operator really makes (allowed) and on what a stolen operator token would try (refused). The
//! policy is read from deploy/admission-policy.yaml, the chart rendered for a 1.30+ cluster
//! (tests/chart checks it is fresh and schema-valid), so what is tested is what ships.
//!
//! The variables are bound as the API server binds them: `object`/`oldObject` with their map keys
//! as they are (`kube_cel::VapEvaluator` escapes every key, label keys included, so
//! `labels["app.kubernetes.io/managed-by"]` would never match there, unlike on a real API server),
//! `request.userInfo.username`, `request.resource.resource`, `request.operation`.

use kube::core::cel::{KubeCelExt, cel};
use serde::Deserialize;
use serde_json::{Value, json};

const POLICY_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/admission-policy.yaml");
const OPERATOR_SA: &str = "system:serviceaccount:sessionstore-system:sessionstore-operator";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// One CEL expression of the policy and the message it denies with.
struct Expression {
    expression: String,
    message: Option<String>,
}

struct Policy {
    match_conditions: Vec<Expression>,
    validations: Vec<Expression>,
    resource_rules: Vec<Value>,
}

fn policy() -> Policy {
    let text = std::fs::read_to_string(POLICY_FILE).expect("deploy/admission-policy.yaml");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(Value::deserialize)
        .collect::<Result<_, _>>()
        .expect("YAML documents");
    let vap = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .expect("a ValidatingAdmissionPolicy");
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        .expect("its binding");
    assert_eq!(binding["spec"]["policyName"], vap["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(vap["spec"]["failurePolicy"], "Fail");
    let expressions = |key: &str| -> Vec<Expression> {
        vap["spec"][key]
            .as_array()
            .unwrap_or_else(|| panic!("spec.{key}"))
            .iter()
            .map(|v| Expression {
                expression: v["expression"].as_str().unwrap().to_string(),
                message: v["message"].as_str().map(String::from),
            })
            .collect()
    };
    Policy {
        match_conditions: expressions("matchConditions"),
        validations: expressions("validations"),
        resource_rules: vap["spec"]["matchConstraints"]["resourceRules"]
            .as_array()
            .unwrap()
            .clone(),
    }
}

/// One admission request: who, what operation on which resource, the object before and after.
struct Req<'a> {
    user: &'a str,
    operation: &'a str,
    group: &'a str,
    resource: &'a str,
    kind: &'a str,
    object: Option<Value>,
    old_object: Option<Value>,
}

#[derive(Debug, PartialEq)]
enum Verdict {
    /// Not the operator (or not a matched resource): the policy does not apply.
    NotMatched,
    Allowed,
    Denied(Vec<String>),
}

fn matched_by_rules(policy: &Policy, req: &Req) -> bool {
    policy.resource_rules.iter().any(|rule| {
        let has = |key: &str, value: &str| {
            rule[key]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == value || v == "*")
        };
        has("apiGroups", req.group)
            && has("resources", req.resource)
            && has("operations", req.operation)
    })
}

/// Evaluates one expression; an evaluation error counts as a denial, as with `failurePolicy: Fail`.
fn passes(ctx: &cel::Context, expression: &str) -> Result<bool, String> {
    let program = cel::Program::compile(expression).map_err(|e| format!("compile: {e}"))?;
    match program.execute(ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("not a bool: {other:?}")),
        Err(e) => Err(format!("evaluation error: {e}")),
    }
}

fn admit(policy: &Policy, req: Req) -> Verdict {
    if !matched_by_rules(policy, &req) {
        return Verdict::NotMatched;
    }
    let mut ctx = cel::Context::default();
    ctx.register_all();
    let bind = |ctx: &mut cel::Context, name: &str, value: Option<Value>| {
        // `null` when absent: `object` on DELETE, `oldObject` on CREATE.
        let value = cel::to_value(value.unwrap_or(Value::Null)).expect("JSON to CEL");
        ctx.add_variable_from_value(name, value);
    };
    let name = req
        .object
        .as_ref()
        .or(req.old_object.as_ref())
        .and_then(|o| o["metadata"]["name"].as_str())
        .unwrap_or_default()
        .to_string();
    let request = json!({
        "operation": req.operation,
        "name": name,
        "namespace": "shop",
        "userInfo": {"username": req.user, "groups": ["system:serviceaccounts"]},
        "kind": {"group": req.group, "version": "v1", "kind": req.kind},
        "resource": {"group": req.group, "version": "v1", "resource": req.resource},
        "dryRun": false,
    });
    bind(&mut ctx, "request", Some(request));
    bind(&mut ctx, "object", req.object);
    bind(&mut ctx, "oldObject", req.old_object);
    for condition in &policy.match_conditions {
        // A match condition that errors fails the request under failurePolicy Fail; none should.
        match passes(&ctx, &condition.expression) {
            Ok(true) => {}
            Ok(false) => return Verdict::NotMatched,
            Err(e) => panic!("match condition failed to evaluate: {e}"),
        }
    }
    let denied: Vec<String> = policy
        .validations
        .iter()
        .filter_map(|v| match passes(&ctx, &v.expression) {
            Ok(true) => None,
            Ok(false) => Some(v.message.clone().unwrap_or_else(|| v.expression.clone())),
            Err(e) => Some(format!(
                "{} ({e})",
                v.message.clone().unwrap_or_else(|| v.expression.clone())
            )),
        })
        .collect();
    if denied.is_empty() {
        Verdict::Allowed
    } else {
        Verdict::Denied(denied)
    }
}

fn labelled(kind: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": kind,
        "metadata": {"name": name, "namespace": "shop", "labels": {
            "app.kubernetes.io/name": "sessionstore",
            "app.kubernetes.io/instance": "web",
            (MANAGED_BY): "sessionstore-operator",
            "app.kubernetes.io/component": "credentials"
        }},
        "data": {"users.acl": "dXNlcg=="}
    })
}

fn foreign(kind: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": kind,
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "billing"}},
        "data": {"token": "c2VjcmV0"}
    })
}

/// A store's pod as the StatefulSet controller makes it.
fn store_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "shop",
            "labels": {
                "app.kubernetes.io/name": "sessionstore",
                "app.kubernetes.io/instance": "web",
                (MANAGED_BY): "sessionstore-operator",
                "app.kubernetes.io/component": "redis",
                "controller-revision-hash": "web-5d8f",
                "statefulset.kubernetes.io/pod-name": name,
                "sessionstore.dev/role": "replica"
            },
            "annotations": {"sessionstore.dev/config-hash": "abc"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                                 "uid": "u-sts", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {"containers": [{"name": "redis", "image": "redis:7.2.5"}]}
    })
}

fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    *object
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer}")) = value;
    object
}

fn core<'a>(
    operation: &'a str,
    resource: &'a str,
    kind: &'a str,
    object: Option<Value>,
    old_object: Option<Value>,
) -> Req<'a> {
    Req {
        user: OPERATOR_SA,
        operation,
        group: "",
        resource,
        kind,
        object,
        old_object,
    }
}

fn assert_denied(verdict: Verdict, containing: &str) {
    match verdict {
        // Denied by the rule evaluating to false, not by an evaluation error.
        Verdict::Denied(messages) => assert!(
            messages
                .iter()
                .any(|m| m.contains(containing) && !m.contains("evaluation error")),
            "denied, but not for {containing:?}: {messages:?}"
        ),
        other => panic!("expected a denial ({containing}), got {other:?}"),
    }
}

#[test]
fn the_operator_may_write_its_own_labelled_children() {
    let p = policy();
    let secret = labelled("Secret", "web-internal");
    assert_eq!(
        admit(
            &p,
            core("CREATE", "secrets", "Secret", Some(secret.clone()), None)
        ),
        Verdict::Allowed
    );
    let changed = with(secret.clone(), "/data/users.acl", json!("bmV3"));
    assert_eq!(
        admit(
            &p,
            core("UPDATE", "secrets", "Secret", Some(changed), Some(secret))
        ),
        Verdict::Allowed
    );
    let sts = labelled("StatefulSet", "web");
    let req = Req {
        group: "apps",
        resource: "statefulsets",
        kind: "StatefulSet",
        ..core("CREATE", "statefulsets", "StatefulSet", Some(sts), None)
    };
    assert_eq!(admit(&p, req), Verdict::Allowed);
    let pdb = labelled("PodDisruptionBudget", "web");
    let req = Req {
        group: "policy",
        ..core(
            "DELETE",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            None,
            Some(pdb),
        )
    };
    assert_eq!(admit(&p, req), Verdict::Allowed);
}

#[test]
fn the_operator_may_move_the_role_label_and_delete_a_stores_pod() {
    let p = policy();
    let pod = store_pod("web-1");
    let promoted = with(
        pod.clone(),
        "/metadata/labels/sessionstore.dev~1role",
        json!("primary"),
    );
    assert_eq!(
        admit(
            &p,
            core("UPDATE", "pods", "Pod", Some(promoted), Some(pod.clone()))
        ),
        Verdict::Allowed
    );
    // A pod that had no role label yet gets one.
    let mut unlabelled = pod.clone();
    unlabelled["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("sessionstore.dev/role");
    assert_eq!(
        admit(
            &p,
            core("UPDATE", "pods", "Pod", Some(pod.clone()), Some(unlabelled))
        ),
        Verdict::Allowed
    );
    assert_eq!(
        admit(
            &p,
            core("DELETE", "pods", "Pod", None, Some(store_pod("web-12")))
        ),
        Verdict::Allowed
    );
}

#[test]
fn a_stolen_operator_token_cannot_touch_foreign_objects() {
    let p = policy();
    let message = "labelled app.kubernetes.io/managed-by=sessionstore-operator";
    let other = foreign("Secret", "billing-db");
    assert_denied(
        admit(
            &p,
            core("CREATE", "secrets", "Secret", Some(other.clone()), None),
        ),
        message,
    );
    assert_denied(
        admit(
            &p,
            core(
                "UPDATE",
                "secrets",
                "Secret",
                Some(other.clone()),
                Some(other.clone()),
            ),
        ),
        message,
    );
    assert_denied(
        admit(&p, core("DELETE", "secrets", "Secret", None, Some(other))),
        message,
    );
    // Labelling a foreign object to take it over: the object as it was lacks the label.
    let taken = with(
        foreign("ConfigMap", "billing"),
        "/metadata/labels",
        json!({(MANAGED_BY): "sessionstore-operator"}),
    );
    assert_denied(
        admit(
            &p,
            core(
                "UPDATE",
                "configmaps",
                "ConfigMap",
                Some(taken),
                Some(foreign("ConfigMap", "billing")),
            ),
        ),
        message,
    );
    // An object without any label at all.
    let bare = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}});
    assert_denied(
        admit(&p, core("CREATE", "services", "Service", Some(bare), None)),
        message,
    );
}

#[test]
fn a_pod_patch_may_change_nothing_but_the_role_label() {
    let p = policy();
    let pod = store_pod("web-0");
    let message = "nothing on a pod but its sessionstore.dev/role label";
    for (what, changed) in [
        (
            "image",
            with(
                pod.clone(),
                "/spec/containers/0/image",
                json!("evil:latest"),
            ),
        ),
        (
            "another label",
            with(
                pod.clone(),
                "/metadata/labels/app.kubernetes.io~1component",
                json!("x"),
            ),
        ),
        (
            "an annotation",
            with(
                pod.clone(),
                "/metadata/annotations",
                json!({"sessionstore.dev/config-hash": "abc", "x": "y"}),
            ),
        ),
        (
            "the owner",
            with(
                pod.clone(),
                "/metadata/ownerReferences/0/name",
                json!("other"),
            ),
        ),
    ] {
        let verdict = admit(
            &p,
            core("UPDATE", "pods", "Pod", Some(changed), Some(pod.clone())),
        );
        assert!(
            matches!(&verdict, Verdict::Denied(m)
                if m.iter().any(|m| m.contains(message) && !m.contains("evaluation error"))),
            "{what}: {verdict:?}"
        );
    }
    // A removed label (other than the role) is a change too.
    let mut fewer = pod.clone();
    fewer["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("controller-revision-hash");
    assert_denied(
        admit(&p, core("UPDATE", "pods", "Pod", Some(fewer), Some(pod))),
        message,
    );
}

#[test]
fn a_pod_delete_is_limited_to_a_stores_own_pods() {
    let p = policy();
    let message = "delete only a store's own pod";
    let mut no_owner = store_pod("web-0");
    no_owner["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    for (what, pod) in [
        ("not <store>-<ordinal>", store_pod("web-proxy")),
        ("another store's name", store_pod("billing-0")),
        ("no owner", no_owner),
        (
            "owned by another StatefulSet",
            with(
                store_pod("web-0"),
                "/metadata/ownerReferences/0/name",
                json!("billing"),
            ),
        ),
        (
            "not the controller",
            with(
                store_pod("web-0"),
                "/metadata/ownerReferences/0/controller",
                json!(false),
            ),
        ),
    ] {
        let verdict = admit(&p, core("DELETE", "pods", "Pod", None, Some(pod)));
        assert!(
            matches!(&verdict, Verdict::Denied(m)
                if m.iter().any(|m| m.contains(message) && !m.contains("evaluation error"))),
            "{what}: {verdict:?}"
        );
    }
    // A foreign pod fails the label rule as well.
    let other = with(
        store_pod("web-0"),
        "/metadata/labels",
        json!({"app": "billing"}),
    );
    assert_denied(
        admit(&p, core("DELETE", "pods", "Pod", None, Some(other))),
        "labelled app.kubernetes.io/managed-by",
    );
}

#[test]
fn other_users_and_unlisted_resources_are_not_matched() {
    let p = policy();
    let other = foreign("Secret", "billing-db");
    let admin = Req {
        user: "kubernetes-admin",
        ..core("CREATE", "secrets", "Secret", Some(other.clone()), None)
    };
    assert_eq!(admit(&p, admin), Verdict::NotMatched);
    // A ServiceAccount of the same name in another namespace is not the operator.
    let lookalike = Req {
        user: "system:serviceaccount:shop:sessionstore-operator",
        ..core("CREATE", "secrets", "Secret", Some(other), None)
    };
    assert_eq!(admit(&p, lookalike), Verdict::NotMatched);
    // Events carry no managed-by label and are not matched.
    let event = Req {
        group: "events.k8s.io",
        ..core(
            "CREATE",
            "events",
            "Event",
            Some(json!({"metadata": {"name": "e"}})),
            None,
        )
    };
    assert_eq!(admit(&p, event), Verdict::NotMatched);
}
