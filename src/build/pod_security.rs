//! A checker for the Kubernetes Pod Security Standards *restricted* profile (plus this operator's
//! extras), so tests can prove every pod template the builders render would be admitted by a
//! namespace labelled `pod-security.kubernetes.io/enforce: restricted`.
//!
//! Follows <https://kubernetes.io/docs/concepts/security/pod-security-standards/> (v1.33): every
//! baseline and restricted control that can be read from a `PodSpec`.

use k8s_openapi::api::core::v1::{Container, PodSpec, SeccompProfile, SecurityContext};

/// Volume types the restricted profile allows.
const ALLOWED_VOLUME_TYPES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Sysctls the baseline profile allows.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Every violation of the restricted profile and of our extras (`readOnlyRootFilesystem`,
/// `automountServiceAccountToken: false`), one line each naming the container or field.
/// Empty means compliant.
pub fn check_restricted(pod: &PodSpec) -> Vec<String> {
    let mut violations = Vec::new();
    let pod_sc = pod.security_context.clone().unwrap_or_default();

    // Host namespaces.
    if pod.host_network == Some(true) {
        violations.push("spec.hostNetwork must not be true".into());
    }
    if pod.host_pid == Some(true) {
        violations.push("spec.hostPID must not be true".into());
    }
    if pod.host_ipc == Some(true) {
        violations.push("spec.hostIPC must not be true".into());
    }
    // Our extra: no API token in Redis pods (they never call the API server).
    if pod.automount_service_account_token != Some(false) {
        violations.push("spec.automountServiceAccountToken must be false".into());
    }

    // Volumes.
    for volume in pod.volumes.iter().flatten() {
        let value = serde_json::to_value(volume).unwrap_or_default();
        let types: Vec<&String> = value
            .as_object()
            .map(|o| o.keys().filter(|k| *k != "name").collect())
            .unwrap_or_default();
        for volume_type in types {
            if !ALLOWED_VOLUME_TYPES.contains(&volume_type.as_str()) {
                violations.push(format!(
                    "volume {:?} has disallowed type {volume_type}",
                    volume.name
                ));
            }
        }
    }

    // Pod-level security context.
    if pod_sc.run_as_user == Some(0) {
        violations.push("spec.securityContext.runAsUser must not be 0".into());
    }
    if let Some(profile) = &pod_sc.seccomp_profile
        && !seccomp_allowed(profile)
    {
        violations.push(format!(
            "spec.securityContext.seccompProfile.type {:?} is not allowed",
            profile.type_
        ));
    }
    if let Some(options) = &pod_sc.se_linux_options {
        violations.extend(selinux_violations("spec.securityContext", options));
    }
    if let Some(profile) = &pod_sc.app_armor_profile
        && profile.type_ == "Unconfined"
    {
        violations.push("spec.securityContext.appArmorProfile must not be Unconfined".into());
    }
    for sysctl in pod_sc.sysctls.iter().flatten() {
        if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
            violations.push(format!(
                "spec.securityContext.sysctls: {} is not a safe sysctl",
                sysctl.name
            ));
        }
    }
    if pod_sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
        violations.push("spec.securityContext.windowsOptions.hostProcess must not be true".into());
    }

    let ephemeral: Vec<Container> = pod
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|e| Container {
            name: e.name.clone(),
            ports: e.ports.clone(),
            security_context: e.security_context.clone(),
            ..Container::default()
        })
        .collect();
    let all = pod
        .init_containers
        .iter()
        .flatten()
        .map(|c| ("initContainers", c))
        .chain(pod.containers.iter().map(|c| ("containers", c)))
        .chain(ephemeral.iter().map(|c| ("ephemeralContainers", c)));
    for (kind, container) in all {
        let at = format!("{kind}[{}]", container.name);
        let sc = container.security_context.clone().unwrap_or_default();
        violations.extend(container_violations(&at, &sc, &pod_sc));
        for port in container.ports.iter().flatten() {
            if port.host_port.is_some_and(|p| p != 0) {
                violations.push(format!(
                    "{at}: hostPort {} is not allowed",
                    port.container_port
                ));
            }
        }
    }
    violations
}

fn container_violations(
    at: &str,
    sc: &SecurityContext,
    pod_sc: &k8s_openapi::api::core::v1::PodSecurityContext,
) -> Vec<String> {
    let mut violations = Vec::new();
    if sc.privileged == Some(true) {
        violations.push(format!("{at}: privileged must not be true"));
    }
    if sc.allow_privilege_escalation != Some(false) {
        violations.push(format!("{at}: allowPrivilegeEscalation must be false"));
    }
    // runAsNonRoot: the container's value wins; the pod's applies when the container leaves it unset.
    if sc.run_as_non_root.or(pod_sc.run_as_non_root) != Some(true) {
        violations.push(format!(
            "{at}: runAsNonRoot must be true (on the container or the pod)"
        ));
    }
    if sc.run_as_user == Some(0) {
        violations.push(format!("{at}: runAsUser must not be 0"));
    }
    match sc
        .seccomp_profile
        .as_ref()
        .or(pod_sc.seccomp_profile.as_ref())
    {
        Some(profile) if seccomp_allowed(profile) => {}
        Some(profile) => violations.push(format!(
            "{at}: seccompProfile.type {:?} is not allowed",
            profile.type_
        )),
        None => violations.push(format!(
            "{at}: seccompProfile must be RuntimeDefault or Localhost (on the container or the pod)"
        )),
    }
    let capabilities = sc.capabilities.clone().unwrap_or_default();
    if !capabilities.drop.iter().flatten().any(|c| c == "ALL") {
        violations.push(format!("{at}: capabilities.drop must include ALL"));
    }
    for added in capabilities.add.iter().flatten() {
        if added != "NET_BIND_SERVICE" {
            violations.push(format!(
                "{at}: capability {added} may not be added (only NET_BIND_SERVICE)"
            ));
        }
    }
    if let Some(options) = &sc.se_linux_options {
        violations.extend(selinux_violations(at, options));
    }
    if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
        violations.push(format!("{at}: procMount must be Default"));
    }
    if let Some(profile) = &sc.app_armor_profile
        && profile.type_ == "Unconfined"
    {
        violations.push(format!("{at}: appArmorProfile must not be Unconfined"));
    }
    if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
        violations.push(format!("{at}: windowsOptions.hostProcess must not be true"));
    }
    // Our extra: nothing writes outside its mounted volumes.
    if sc.read_only_root_filesystem != Some(true) {
        violations.push(format!("{at}: readOnlyRootFilesystem must be true"));
    }
    violations
}

fn seccomp_allowed(profile: &SeccompProfile) -> bool {
    profile.type_ == "RuntimeDefault" || profile.type_ == "Localhost"
}

fn selinux_violations(
    at: &str,
    options: &k8s_openapi::api::core::v1::SELinuxOptions,
) -> Vec<String> {
    let mut violations = Vec::new();
    if let Some(type_) = options.type_.as_deref()
        && ![
            "",
            "container_t",
            "container_init_t",
            "container_kvm_t",
            "container_engine_t",
        ]
        .contains(&type_)
    {
        violations.push(format!(
            "{at}: seLinuxOptions.type {type_:?} is not allowed"
        ));
    }
    if options.user.as_deref().is_some_and(|u| !u.is_empty())
        || options.role.as_deref().is_some_and(|r| !r.is_empty())
    {
        violations.push(format!(
            "{at}: seLinuxOptions.user and role must not be set"
        ));
    }
    violations
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A compliant pod with one init container and one container; each test breaks one thing.
    fn compliant() -> serde_json::Value {
        let sc = json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true
        });
        json!({
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{"name": "init", "securityContext": sc}],
            "containers": [{"name": "main", "securityContext": sc, "ports": [{"containerPort": 6379}]}],
            "volumes": [
                {"name": "c", "configMap": {"name": "x"}},
                {"name": "s", "secret": {"secretName": "x"}},
                {"name": "e", "emptyDir": {}},
                {"name": "p", "persistentVolumeClaim": {"claimName": "x"}},
                {"name": "j", "projected": {"sources": []}}
            ]
        })
    }

    fn check(pod: serde_json::Value) -> Vec<String> {
        check_restricted(&serde_json::from_value(pod).unwrap())
    }

    /// Applies `edit` to the compliant pod and asserts exactly one violation mentioning `needle`.
    fn fails_with(needle: &str, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut pod = compliant();
        edit(&mut pod);
        let violations = check(pod);
        assert_eq!(violations.len(), 1, "{needle}: {violations:?}");
        assert!(violations[0].contains(needle), "{needle}: {violations:?}");
    }

    #[test]
    fn compliant_pod_passes() {
        assert_eq!(check(compliant()), Vec::<String>::new());
    }

    #[test]
    fn host_namespaces_fail() {
        fails_with("hostNetwork", |p| p["hostNetwork"] = json!(true));
        fails_with("hostPID", |p| p["hostPID"] = json!(true));
        fails_with("hostIPC", |p| p["hostIPC"] = json!(true));
    }

    #[test]
    fn service_account_token_must_not_be_mounted() {
        fails_with("automountServiceAccountToken", |p| {
            p["automountServiceAccountToken"] = json!(true)
        });
        fails_with("automountServiceAccountToken", |p| {
            p.as_object_mut()
                .unwrap()
                .remove("automountServiceAccountToken");
        });
    }

    #[test]
    fn disallowed_volume_types_fail() {
        fails_with("hostPath", |p| {
            p["volumes"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "h", "hostPath": {"path": "/"}}))
        });
        fails_with("nfs", |p| {
            p["volumes"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "n", "nfs": {"server": "s", "path": "/"}}))
        });
    }

    #[test]
    fn privileged_and_escalation_fail() {
        fails_with("privileged", |p| {
            p["containers"][0]["securityContext"]["privileged"] = json!(true)
        });
        fails_with("allowPrivilegeEscalation", |p| {
            p["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true)
        });
        fails_with("initContainers[init]: allowPrivilegeEscalation", |p| {
            p["initContainers"][0]["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("allowPrivilegeEscalation");
        });
    }

    #[test]
    fn run_as_root_fails() {
        fails_with("runAsNonRoot", |p| {
            p["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("runAsNonRoot");
            p["initContainers"][0]["securityContext"]["runAsNonRoot"] = json!(true);
        });
        fails_with("containers[main]: runAsNonRoot", |p| {
            p["containers"][0]["securityContext"]["runAsNonRoot"] = json!(false)
        });
        fails_with("spec.securityContext.runAsUser", |p| {
            p["securityContext"]["runAsUser"] = json!(0)
        });
        fails_with("containers[main]: runAsUser", |p| {
            p["containers"][0]["securityContext"]["runAsUser"] = json!(0)
        });
    }

    #[test]
    fn seccomp_must_be_runtime_default_or_localhost() {
        let mut pod = compliant();
        pod["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("seccompProfile");
        assert_eq!(
            check(pod).len(),
            2,
            "both containers lose their seccomp profile"
        );
        fails_with("Unconfined", |p| {
            p["containers"][0]["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"})
        });
        let mut localhost = compliant();
        localhost["securityContext"]["seccompProfile"] =
            json!({"type": "Localhost", "localhostProfile": "redis.json"});
        assert_eq!(check(localhost), Vec::<String>::new());
    }

    #[test]
    fn capabilities_must_drop_all_and_add_only_net_bind_service() {
        fails_with("drop must include ALL", |p| {
            p["containers"][0]["securityContext"]["capabilities"] = json!({"drop": ["NET_RAW"]})
        });
        fails_with("SYS_ADMIN", |p| {
            p["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"])
        });
        let mut ok = compliant();
        ok["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["NET_BIND_SERVICE"]);
        assert_eq!(check(ok), Vec::<String>::new());
    }

    #[test]
    fn host_ports_fail() {
        fails_with("hostPort", |p| {
            p["containers"][0]["ports"][0]["hostPort"] = json!(6379)
        });
    }

    #[test]
    fn writable_root_filesystem_fails() {
        fails_with("readOnlyRootFilesystem", |p| {
            p["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = json!(false)
        });
    }

    #[test]
    fn ephemeral_containers_are_checked() {
        fails_with("ephemeralContainers[debug]", |p| {
            p["ephemeralContainers"] = json!([{"name": "debug", "securityContext": {
                "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true
            }}])
        });
    }

    #[test]
    fn baseline_controls_fail() {
        fails_with("procMount", |p| {
            p["containers"][0]["securityContext"]["procMount"] = json!("Unmasked")
        });
        fails_with("seLinuxOptions.type", |p| {
            p["containers"][0]["securityContext"]["seLinuxOptions"] = json!({"type": "spc_t"})
        });
        fails_with("appArmorProfile", |p| {
            p["securityContext"]["appArmorProfile"] = json!({"type": "Unconfined"})
        });
        fails_with("sysctls", |p| {
            p["securityContext"]["sysctls"] = json!([{"name": "kernel.msgmax", "value": "1"}])
        });
        fails_with("hostProcess", |p| {
            p["containers"][0]["securityContext"]["windowsOptions"] = json!({"hostProcess": true})
        });
    }
}
