//! The Kamailio SIP edge: Deployment, Service, and a ConfigMap with `kamailio.cfg` and
//! `dispatcher.list`.
//!
//! `dispatcher.list` holds the IPs of ready FreeSWITCH pods (Kamailio resolves names only at
//! reload and skips names that do not resolve). It is rendered from [`Destination`]s the
//! reconciler gathers from the media pods; the ConfigMap is mounted as a directory so updates
//! reach running pods without a restart, and the SIP issue's sync sidecar reloads the module.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use callfleet_crds::callcluster::{
    DispatchAlgorithm, MediaSpec, SipServiceType, SipTransport, TrafficPolicy,
};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, ExecAction,
    PodSpec, PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use super::common::{Component, Context, names, string_map};
use super::worker::read_only_mount;

/// Where the SIP ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/kamailio";
/// The dispatcher set holding the media servers.
pub const DISPATCHER_SET: u32 = 1;
/// Kamailio's binrpc control socket, used by probes and `dispatcher.reload`.
pub const CTL_SOCKET: &str = "unix:/tmp/kamailio_ctl";

/// One FreeSWITCH pod Kamailio may send calls to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Pod name; the dispatcher's unique id (`duid`) for call-load tracking.
    pub pod_name: String,
    /// Pod IP (the node IP with `hostNetwork`). Never a name: Kamailio resolves names only at
    /// reload.
    pub ip: IpAddr,
    /// FreeSWITCH SIP port.
    pub port: u16,
    /// Most concurrent calls Kamailio sends to it (`maxload`, for the `callLoad` algorithm).
    pub max_load: u32,
}

impl Destination {
    /// A destination for a ready media pod of a CallCluster with this media spec.
    pub fn for_media_pod(media: &MediaSpec, pod_name: impl Into<String>, ip: IpAddr) -> Self {
        Self {
            pod_name: pod_name.into(),
            ip,
            port: u16::try_from(media.sip_port).unwrap_or(5060),
            max_load: u32::try_from(media.max_sessions_per_pod).unwrap_or(0),
        }
    }

    /// `ip:port` (`[ip]:port` for IPv6), as shown in the CallCluster status.
    pub fn address(&self) -> String {
        match self.ip {
            IpAddr::V4(ip) => format!("{ip}:{}", self.port),
            IpAddr::V6(ip) => format!("[{ip}]:{}", self.port),
        }
    }
}

/// `dispatcher.list`: one line per destination in set 1, sorted by pod name so the file (and
/// the ConfigMap) only changes when the set of ready pods changes. Weights split 100 evenly
/// (the `weight` algorithm fills 100 slots). An empty list is valid: Kamailio starts with no
/// destinations and answers new calls with 503 until media servers are ready.
pub fn render_dispatcher_list(destinations: &[Destination]) -> String {
    let mut sorted: Vec<&Destination> = destinations.iter().collect();
    sorted.sort();
    sorted.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
    let count = sorted.len();
    let mut out = String::from(
        "# Rendered by callfleet-operator: ready FreeSWITCH pods.\n\
         # setid destination flags priority attributes\n",
    );
    for (index, d) in sorted.iter().enumerate() {
        let weight = (100 / count + usize::from(index < 100 % count)).max(1);
        let _ = writeln!(
            out,
            "{DISPATCHER_SET} sip:{} 0 0 duid={};maxload={};weight={weight}",
            d.address(),
            d.pod_name,
            d.max_load,
        );
    }
    out
}

/// The `ds_select_dst` algorithm number.
pub fn algorithm_number(algorithm: DispatchAlgorithm) -> u8 {
    match algorithm {
        DispatchAlgorithm::HashCallId => 0,
        DispatchAlgorithm::RoundRobin => 4,
        DispatchAlgorithm::Weight => 9,
        DispatchAlgorithm::CallLoad => 10,
    }
}

/// `kamailio.cfg` and `dispatcher.list`.
pub fn config_map(ctx: &Context<'_>, destinations: &[Destination]) -> ConfigMap {
    ConfigMap {
        metadata: ctx.meta(names::sip_config(ctx.name), Component::Sip),
        data: Some(string_map([
            ("kamailio.cfg", kamailio_cfg(ctx)),
            ("dispatcher.list", render_dispatcher_list(destinations)),
        ])),
        ..Default::default()
    }
}

/// A minimal, valid stateful proxy: sanity checks, in-dialog routing via Record-Route, and new
/// INVITEs dispatched to a media server with failover to the next on 5xx/408. OPTIONS probes
/// (`ds_ping_interval`) drop media servers that stop answering 2xx, e.g. a paused FreeSWITCH.
pub fn kamailio_cfg(ctx: &Context<'_>) -> String {
    let sip = &ctx.spec.sip;
    let port = sip.service.port;
    let transports = effective_transports(&sip.service.transports);
    let algorithm = algorithm_number(sip.dispatch_algorithm);
    let call_load = sip.dispatch_algorithm == DispatchAlgorithm::CallLoad;
    let probe = sip.probe_interval_seconds;
    let name = ctx.name;
    let namespace = ctx.namespace;

    let mut listen = String::new();
    for t in &transports {
        let proto = transport_name(*t);
        let _ = writeln!(listen, "listen={proto}:0.0.0.0:{port}");
    }
    let tcp = if transports.contains(&SipTransport::Tcp) {
        "disable_tcp=no"
    } else {
        "disable_tcp=yes"
    };
    // Call-load tracking needs the dispatcher's call hash table and load bookkeeping on
    // answer, hang-up and failure.
    let load_params = if call_load {
        "modparam(\"dispatcher\", \"ds_hash_size\", 9)\n"
    } else {
        ""
    };
    let (load_bye, load_reply, load_failure) = if call_load {
        (
            "\t\t\tif (is_method(\"BYE|CANCEL\")) ds_load_update();\n",
            "onreply_route[DISPATCH_REPLY] {\n\tif (is_method(\"INVITE\") && $rs =~ \"^2\") ds_load_update();\n}\n",
            "\tds_load_unset();\n",
        )
    } else {
        ("", "", "")
    };
    let on_reply = if call_load {
        "\tt_on_reply(\"DISPATCH_REPLY\");\n"
    } else {
        ""
    };

    format!(
        r#"#!KAMAILIO
# Rendered by callfleet-operator for CallCluster {namespace}/{name}. Edit the CallCluster, not this file.

debug=2
log_stderror=yes
fork=yes
children=8
auto_aliases=no
server_signature=no
user_agent_header="User-Agent: callfleet-sip"
{tcp}
{listen}
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "ctl.so"
loadmodule "dispatcher.so"

modparam("ctl", "binrpc", "{CTL_SOCKET}")
modparam("rr", "append_fromtag", 0)
modparam("dispatcher", "list_file", "{CONFIG_DIR}/dispatcher.list")
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "xavp_dst", "_dsdst_")
modparam("dispatcher", "ds_ping_method", "OPTIONS")
modparam("dispatcher", "ds_ping_interval", {probe})
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("dispatcher", "ds_ping_reply_codes", "class=2")
{load_params}
request_route {{
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	if (!sanity_check()) {{
		exit;
	}}
	if (is_method("OPTIONS") && uri == myself && $rU == $null) {{
		sl_send_reply("200", "OK");
		exit;
	}}
	if (has_totag()) {{
		if (loose_route()) {{
{load_bye}			t_relay();
			exit;
		}}
		if (is_method("ACK") && t_check_trans()) {{
			t_relay();
		}} else if (!is_method("ACK")) {{
			sl_send_reply("404", "Not Here");
		}}
		exit;
	}}
	if (is_method("CANCEL")) {{
		if (t_check_trans()) {{
			t_relay();
		}}
		exit;
	}}
	t_check_trans();
	if (!is_method("INVITE")) {{
		sl_send_reply("405", "Method Not Allowed");
		exit;
	}}
	record_route();
	if (!ds_select_dst("{DISPATCHER_SET}", "{algorithm}")) {{
		sl_send_reply("503", "No Media Server Available");
		exit;
	}}
	t_on_failure("DISPATCH_FAILURE");
{on_reply}	if (!t_relay()) {{
		sl_reply_error();
	}}
	exit;
}}

failure_route[DISPATCH_FAILURE] {{
	if (t_is_canceled()) {{
		exit;
	}}
{load_failure}	if (t_check_status("408|5[0-9][0-9]") && ds_next_dst()) {{
		t_on_failure("DISPATCH_FAILURE");
		t_relay();
		exit;
	}}
}}
{load_reply}"#
    )
}

/// The Kamailio Deployment.
pub fn deployment(ctx: &Context<'_>) -> Deployment {
    let component = Component::Sip;
    let sip = &ctx.spec.sip;
    let port = sip.service.port;
    let transports = effective_transports(&sip.service.transports);
    let kamcmd = |command: &str| ExecAction {
        command: Some(
            ["kamcmd", "-s", CTL_SOCKET, command]
                .map(String::from)
                .to_vec(),
        ),
    };
    let container = Container {
        name: "kamailio".into(),
        image: Some(sip.image.clone()),
        command: Some(
            [
                "kamailio",
                "-DD",
                "-E",
                "-f",
                &format!("{CONFIG_DIR}/kamailio.cfg"),
            ]
            .map(String::from)
            .to_vec(),
        ),
        ports: Some(
            transports
                .iter()
                .map(|t| ContainerPort {
                    name: Some(port_name(*t)),
                    container_port: port,
                    protocol: Some(protocol(*t).into()),
                    ..Default::default()
                })
                .collect(),
        ),
        readiness_probe: Some(Probe {
            exec: Some(kamcmd("core.uptime")),
            period_seconds: Some(5),
            timeout_seconds: Some(3),
            failure_threshold: Some(2),
            ..Default::default()
        }),
        liveness_probe: Some(Probe {
            exec: Some(kamcmd("core.uptime")),
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            timeout_seconds: Some(3),
            failure_threshold: Some(6),
            ..Default::default()
        }),
        resources: sip.resources.clone(),
        volume_mounts: Some(vec![
            read_only_mount("config", CONFIG_DIR),
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    Deployment {
        metadata: ctx.meta(names::sip(ctx.name), component),
        spec: DeploymentSpec {
            replicas: Some(sip.replicas),
            selector: ctx.label_selector(component),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ctx.pod_meta(component, BTreeMap::new())),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: names::sip_config(ctx.name),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "tmp".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        },
                    ]),
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The Service carriers send SIP to.
pub fn service(ctx: &Context<'_>) -> Service {
    let component = Component::Sip;
    let svc = &ctx.spec.sip.service;
    let transports = effective_transports(&svc.transports);
    let type_ = match svc.type_ {
        SipServiceType::ClusterIP => "ClusterIP",
        SipServiceType::NodePort => "NodePort",
        SipServiceType::LoadBalancer => "LoadBalancer",
    };
    // Only node-facing Services take an external traffic policy; the API server rejects it
    // on ClusterIP.
    let external_traffic_policy = (svc.type_ != SipServiceType::ClusterIP).then(|| {
        match svc.external_traffic_policy {
            TrafficPolicy::Cluster => "Cluster",
            TrafficPolicy::Local => "Local",
        }
        .to_owned()
    });
    let mut metadata = ctx.meta(names::sip(ctx.name), component);
    if !svc.annotations.is_empty() {
        metadata.annotations = Some(svc.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(ctx.selector_labels(component)),
            external_traffic_policy,
            ports: Some(
                transports
                    .iter()
                    .map(|t| ServicePort {
                        name: Some(port_name(*t)),
                        port: svc.port,
                        target_port: Some(IntOrString::Int(svc.port)),
                        protocol: Some(protocol(*t).into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The listed transports, sorted and deduplicated; UDP when the list is empty (the schema
/// requires one, this guards objects that bypassed it).
fn effective_transports(transports: &[SipTransport]) -> Vec<SipTransport> {
    let mut t = transports.to_vec();
    t.sort();
    t.dedup();
    if t.is_empty() {
        t.push(SipTransport::Udp);
    }
    t
}

fn transport_name(t: SipTransport) -> &'static str {
    match t {
        SipTransport::Udp => "udp",
        SipTransport::Tcp => "tcp",
    }
}

fn protocol(t: SipTransport) -> &'static str {
    match t {
        SipTransport::Udp => "UDP",
        SipTransport::Tcp => "TCP",
    }
}

fn port_name(t: SipTransport) -> String {
    format!("sip-{}", transport_name(t))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use serde_json::{Value, json};

    use super::super::Child;
    use super::super::fixtures::{call_cluster, find, render};
    use super::*;

    fn dest(pod: &str, ip: IpAddr) -> Destination {
        Destination {
            pod_name: pod.into(),
            ip,
            port: 5060,
            max_load: 1000,
        }
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn lines(list: &str) -> Vec<&str> {
        list.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn empty_list_is_only_comments() {
        let list = render_dispatcher_list(&[]);
        assert!(lines(&list).is_empty());
        assert!(list.ends_with('\n'));
    }

    #[test]
    fn list_is_sorted_deduplicated_and_weighted_to_100() {
        let list = render_dispatcher_list(&[
            dest("support-media-2", v4(12)),
            dest("support-media-0", v4(10)),
            dest("support-media-1", v4(11)),
            dest("support-media-1", v4(11)),
        ]);
        assert_eq!(
            lines(&list),
            [
                "1 sip:10.0.0.10:5060 0 0 duid=support-media-0;maxload=1000;weight=34",
                "1 sip:10.0.0.11:5060 0 0 duid=support-media-1;maxload=1000;weight=33",
                "1 sip:10.0.0.12:5060 0 0 duid=support-media-2;maxload=1000;weight=33",
            ]
        );
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let d = dest("m-0", IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(d.address(), "[::1]:5060");
        assert!(render_dispatcher_list(&[d]).contains("sip:[::1]:5060 "));
    }

    #[test]
    fn many_destinations_keep_a_positive_weight() {
        let many: Vec<Destination> = (0..150u8)
            .map(|i| dest(&format!("m-{i:03}"), v4(i)))
            .collect();
        let list = render_dispatcher_list(&many);
        assert_eq!(lines(&list).len(), 150);
        assert!(lines(&list).iter().all(|l| !l.ends_with("weight=0")));
    }

    #[test]
    fn destination_from_media_spec() {
        let media = MediaSpec {
            sip_port: 5080,
            max_sessions_per_pod: 250,
            ..Default::default()
        };
        let d = Destination::for_media_pod(&media, "support-media-0", v4(9));
        assert_eq!(d.port, 5080);
        assert_eq!(d.max_load, 250);
        assert_eq!(d.address(), "10.0.0.9:5080");
    }

    fn config(spec: Value) -> (String, String) {
        let children = render(&call_cluster(spec));
        let Child::ConfigMap(cm) = find(&children, "ConfigMap", "support-sip-config") else {
            unreachable!()
        };
        let data = cm.data.clone().unwrap();
        (
            data["kamailio.cfg"].clone(),
            data["dispatcher.list"].clone(),
        )
    }

    fn braces_balance(cfg: &str) -> bool {
        let mut depth = 0i32;
        for c in cfg.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth < 0 {
                return false;
            }
        }
        depth == 0
    }

    #[test]
    fn kamailio_cfg_defaults() {
        let (cfg, list) = config(json!({}));
        assert!(cfg.starts_with("#!KAMAILIO\n"));
        assert!(braces_balance(&cfg));
        assert!(cfg.contains("listen=udp:0.0.0.0:5060\n"));
        assert!(cfg.contains("listen=tcp:0.0.0.0:5060\n"));
        assert!(cfg.contains("disable_tcp=no"));
        assert!(cfg.contains(r#"loadmodule "dispatcher.so""#));
        assert!(
            cfg.contains(r#"modparam("dispatcher", "list_file", "/etc/kamailio/dispatcher.list")"#)
        );
        assert!(cfg.contains(r#"modparam("dispatcher", "ds_ping_interval", 5)"#));
        assert!(cfg.contains(r#"ds_select_dst("1", "4")"#));
        assert!(!cfg.contains("ds_load_update"));
        assert!(lines(&list).is_empty());
    }

    #[test]
    fn each_algorithm_selects_its_number() {
        for (name, number) in [
            ("roundRobin", 4),
            ("weight", 9),
            ("callLoad", 10),
            ("hashCallId", 0),
        ] {
            let (cfg, _) = config(json!({"sip": {"dispatchAlgorithm": name}}));
            assert!(
                cfg.contains(&format!(r#"ds_select_dst("1", "{number}")"#)),
                "{name}"
            );
            assert!(braces_balance(&cfg), "{name}");
        }
    }

    #[test]
    fn call_load_tracks_calls() {
        let (cfg, _) = config(json!({"sip": {"dispatchAlgorithm": "callLoad"}}));
        assert!(cfg.contains(r#"modparam("dispatcher", "ds_hash_size", 9)"#));
        assert!(cfg.contains("ds_load_update()"));
        assert!(cfg.contains("ds_load_unset()"));
        assert!(cfg.contains(r#"t_on_reply("DISPATCH_REPLY")"#));
        assert!(cfg.contains("onreply_route[DISPATCH_REPLY]"));
    }

    #[test]
    fn udp_only_disables_tcp_and_probe_interval_follows_spec() {
        let (cfg, _) = config(json!({"sip": {
            "probeIntervalSeconds": 2,
            "service": {"port": 5070, "transports": ["udp"]},
        }}));
        assert!(cfg.contains("listen=udp:0.0.0.0:5070\n"));
        assert!(!cfg.contains("listen=tcp"));
        assert!(cfg.contains("disable_tcp=yes"));
        assert!(cfg.contains(r#""ds_ping_interval", 2)"#));
    }

    #[test]
    fn destinations_reach_the_config_map() {
        let cc = call_cluster(json!({}));
        let ctx = super::super::common::Context::new(&cc).unwrap();
        let cm = config_map(&ctx, &[dest("support-media-0", v4(7))]);
        let list = &cm.data.unwrap()["dispatcher.list"];
        assert!(list.contains("sip:10.0.0.7:5060"));
    }

    fn service_of(spec: Value) -> Value {
        let children = render(&call_cluster(spec));
        find(&children, "Service", "support-sip")
            .to_value()
            .unwrap()
    }

    #[test]
    fn load_balancer_service_by_default() {
        let svc = service_of(json!({}));
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
        let ports = svc["spec"]["ports"].as_array().unwrap();
        assert_eq!(
            ports.iter().map(|p| p["name"].clone()).collect::<Vec<_>>(),
            [json!("sip-udp"), json!("sip-tcp")]
        );
        assert!(svc["metadata"].get("annotations").is_none());
    }

    #[test]
    fn cluster_ip_service_has_no_traffic_policy() {
        let svc = service_of(json!({"sip": {"service": {
            "type": "ClusterIP",
            "annotations": {"example.com/lb": "internal"},
        }}}));
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert!(svc["spec"].get("externalTrafficPolicy").is_none());
        assert_eq!(svc["metadata"]["annotations"]["example.com/lb"], "internal");
    }

    #[test]
    fn local_traffic_policy_on_node_port() {
        let svc = service_of(
            json!({"sip": {"service": {"type": "NodePort", "externalTrafficPolicy": "Local"}}}),
        );
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Local");
    }

    #[test]
    fn deployment_runs_kamailio_with_the_rendered_config() {
        let children = render(&call_cluster(json!({"sip": {"replicas": 3}})));
        let deployment = find(&children, "Deployment", "support-sip")
            .to_value()
            .unwrap();
        assert_eq!(deployment["spec"]["replicas"], 3);
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(
            container["command"],
            json!(["kamailio", "-DD", "-E", "-f", "/etc/kamailio/kamailio.cfg"])
        );
        assert_eq!(
            container["readinessProbe"]["exec"]["command"],
            json!(["kamcmd", "-s", "unix:/tmp/kamailio_ctl", "core.uptime"])
        );
        assert!(
            container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m.get("subPath").is_none())
        );
        assert_eq!(pod["volumes"][0]["configMap"]["name"], "support-sip-config");
    }
}
