//! The FreeSWITCH tier: StatefulSet, headless Service, ConfigMap, PodDisruptionBudget.
//!
//! Kamailio dispatches to pod IPs (never through a UDP Service, whose conntrack entries go
//! stale), so the Service is headless and only gives pods stable DNS names. On scale-down or
//! rollout a pod pauses inbound calls (`fsctl pause inbound`: OPTIONS probes then get 503 and
//! Kamailio stops sending calls) and waits for its calls to end, bounded by
//! `drainTimeoutSeconds`. The configuration is minimal but complete; the SIP issue extends it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    ExecAction, Lifecycle, LifecycleHandler, PodAffinityTerm, PodAntiAffinity, PodSpec,
    PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume,
    VolumeMount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::RenderError;
use super::common::{Component, Context, names, string_map};
use super::token::{self, TOKEN_SECRET_DIR, TOKEN_SECRET_FILE};
use super::worker::{self, WORKER_PORT, field, read_only_mount, secret_file_volume, value};

/// Where the media ConfigMap is mounted: FreeSWITCH's configuration directory.
pub const CONFIG_DIR: &str = "/etc/freeswitch";
/// Seconds the kubelet waits beyond the drain before killing FreeSWITCH.
const TERMINATION_MARGIN_SECONDS: i64 = 30;
/// Name of the SIP profile Kamailio sends calls to.
pub const SIP_PROFILE: &str = "callfleet";

/// The FreeSWITCH StatefulSet.
pub fn stateful_set(ctx: &Context<'_>) -> Result<StatefulSet, RenderError> {
    let media = &ctx.spec.media;
    let range = media.rtp_port_range;
    if range.start >= range.end || range.start % 2 != 0 {
        return Err(RenderError::InvalidSpec(format!(
            "media.rtpPortRange {}-{} must start on an even port below its end",
            range.start, range.end
        )));
    }
    let component = Component::Media;
    let drain = i64::from(media.drain_timeout_seconds);
    let (token_secret, token_key) = token::secret_ref(ctx);

    let env = vec![
        value("FREESWITCH_RTP_START", range.start.to_string()),
        value("FREESWITCH_RTP_END", range.end.to_string()),
        value("FREESWITCH_SIP_PORT", media.sip_port.to_string()),
        value(
            "CALLFLEET_MAX_SESSIONS",
            media.max_sessions_per_pod.to_string(),
        ),
        value("CALLFLEET_DRAIN_SECONDS", drain.to_string()),
        value("CALLFLEET_TOKEN_SECRET_FILE", TOKEN_SECRET_FILE.into()),
        value(
            "CALLFLEET_WORKER_URL",
            format!(
                "ws://{}.{}.svc:{WORKER_PORT}/ws/freeswitch",
                names::worker(ctx.name),
                ctx.namespace
            ),
        ),
        field("POD_IP", "status.podIP"),
    ];
    let container = Container {
        name: "freeswitch".into(),
        image: Some(media.image.clone()),
        command: Some(
            [
                "freeswitch",
                "-nonat",
                "-nf",
                "-conf",
                CONFIG_DIR,
                "-log",
                "/var/log/freeswitch",
                "-db",
                "/var/lib/freeswitch/db",
                "-run",
                "/var/run/freeswitch",
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(env),
        ports: Some(sip_ports(media.sip_port)),
        readiness_probe: Some(Probe {
            exec: Some(script("callfleet-ready.sh")),
            period_seconds: Some(5),
            timeout_seconds: Some(3),
            failure_threshold: Some(2),
            ..Default::default()
        }),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(media.sip_port),
                ..Default::default()
            }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..Default::default()
        }),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(script("callfleet-drain.sh")),
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: media.resources.clone(),
        volume_mounts: Some(vec![
            read_only_mount("config", CONFIG_DIR),
            read_only_mount("auth", TOKEN_SECRET_DIR),
            writable_mount("db", "/var/lib/freeswitch"),
            writable_mount("log", "/var/log/freeswitch"),
            writable_mount("run", "/var/run/freeswitch"),
        ]),
        ..Default::default()
    };

    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::media_config(ctx.name),
                ..Default::default()
            }),
            ..Default::default()
        },
        secret_file_volume("auth", &token_secret, &token_key, token::TOKEN_SECRET_KEY),
    ];
    for scratch in ["db", "log", "run"] {
        volumes.push(Volume {
            name: scratch.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }

    let mut pod = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        termination_grace_period_seconds: Some(drain + TERMINATION_MARGIN_SECONDS),
        enable_service_links: Some(false),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    if media.host_network {
        pod.host_network = Some(true);
        pod.dns_policy = Some("ClusterFirstWithHostNet".into());
        // Two media pods on one node would fight over the same SIP and RTP ports.
        pod.affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    label_selector: Some(ctx.label_selector(component)),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    Ok(StatefulSet {
        metadata: ctx.meta(names::media(ctx.name), component),
        spec: StatefulSetSpec {
            replicas: Some(media.replicas),
            service_name: Some(names::media(ctx.name)),
            selector: ctx.label_selector(component),
            // Media servers are interchangeable: start and stop them in parallel.
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ctx.pod_meta(component, BTreeMap::new())),
                spec: Some(pod),
            },
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Headless Service: stable pod DNS names, no load balancing in front of RTP or SIP.
pub fn headless_service(ctx: &Context<'_>) -> Service {
    let component = Component::Media;
    let port = ctx.spec.media.sip_port;
    Service {
        metadata: ctx.meta(names::media(ctx.name), component),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(ctx.selector_labels(component)),
            ports: Some(
                sip_ports(port)
                    .into_iter()
                    .map(|p| ServicePort {
                        name: p.name,
                        port: p.container_port,
                        target_port: Some(IntOrString::Int(p.container_port)),
                        protocol: p.protocol,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One media pod at a time may be evicted voluntarily; it drains before it stops.
pub fn disruption_budget(ctx: &Context<'_>) -> PodDisruptionBudget {
    worker::one_unavailable_budget(ctx, names::media(ctx.name), Component::Media)
}

/// `freeswitch.xml` plus the readiness and drain scripts.
pub fn config_map(ctx: &Context<'_>) -> ConfigMap {
    ConfigMap {
        metadata: ctx.meta(names::media_config(ctx.name), Component::Media),
        data: Some(string_map([
            ("freeswitch.xml", freeswitch_xml(ctx)),
            ("callfleet-ready.sh", READY_SCRIPT.to_owned()),
            ("callfleet-drain.sh", DRAIN_SCRIPT.to_owned()),
        ])),
        ..Default::default()
    }
}

/// A self-contained FreeSWITCH configuration: core settings, the modules a media server for
/// AI calls needs, event socket on loopback (for `fs_cli` in the probes and drain), one SIP
/// profile on the pod IP, and a dialplan that answers and parks calls until the SIP issue adds
/// the audio fork to the workers.
pub fn freeswitch_xml(ctx: &Context<'_>) -> String {
    let media = &ctx.spec.media;
    let start = media.rtp_port_range.start;
    let end = media.rtp_port_range.end;
    let max_sessions = media.max_sessions_per_pod;
    let sip_port = media.sip_port;
    let name = ctx.name;
    let namespace = ctx.namespace;
    format!(
        r#"<?xml version="1.0"?>
<!-- Rendered by callfleet-operator for CallCluster {namespace}/{name}. Edit the CallCluster, not this file. -->
<document type="freeswitch/xml">
  <section name="configuration" description="Core and module configuration">
    <configuration name="switch.conf" description="Core">
      <settings>
        <param name="max-sessions" value="{max_sessions}"/>
        <param name="sessions-per-second" value="1000"/>
        <param name="rtp-start-port" value="{start}"/>
        <param name="rtp-end-port" value="{end}"/>
        <param name="loglevel" value="info"/>
        <param name="colorize-console" value="false"/>
        <param name="dump-cores" value="no"/>
      </settings>
    </configuration>
    <configuration name="modules.conf" description="Modules">
      <modules>
        <load module="mod_console"/>
        <load module="mod_logfile"/>
        <load module="mod_event_socket"/>
        <load module="mod_sofia"/>
        <load module="mod_commands"/>
        <load module="mod_dptools"/>
        <load module="mod_dialplan_xml"/>
        <load module="mod_sndfile"/>
        <load module="mod_native_file"/>
        <load module="mod_tone_stream"/>
      </modules>
    </configuration>
    <configuration name="console.conf" description="Console logger">
      <mappings>
        <map name="all" value="console,debug,info,notice,warning,err,crit,alert"/>
      </mappings>
      <settings>
        <param name="colorize" value="false"/>
        <param name="loglevel" value="info"/>
      </settings>
    </configuration>
    <configuration name="logfile.conf" description="File logger">
      <settings>
        <param name="rotate-on-hup" value="true"/>
      </settings>
      <profiles>
        <profile name="default">
          <settings>
            <param name="rollover" value="10485760"/>
            <param name="maximum-rotate" value="2"/>
          </settings>
          <mappings>
            <map name="all" value="warning,err,crit,alert"/>
          </mappings>
        </profile>
      </profiles>
    </configuration>
    <configuration name="event_socket.conf" description="Event socket (loopback only)">
      <settings>
        <param name="listen-ip" value="127.0.0.1"/>
        <param name="listen-port" value="8021"/>
        <param name="password" value="ClueCon"/>
      </settings>
    </configuration>
    <configuration name="sofia.conf" description="SIP">
      <global_settings>
        <param name="log-level" value="0"/>
      </global_settings>
      <profiles>
        <profile name="{SIP_PROFILE}">
          <settings>
            <param name="sip-ip" value="$${{local_ip_v4}}"/>
            <param name="rtp-ip" value="$${{local_ip_v4}}"/>
            <param name="sip-port" value="{sip_port}"/>
            <param name="context" value="callfleet"/>
            <param name="dialplan" value="XML"/>
            <param name="auth-calls" value="false"/>
            <param name="accept-blind-reg" value="false"/>
            <param name="inbound-codec-prefs" value="PCMU,PCMA"/>
            <param name="outbound-codec-prefs" value="PCMU,PCMA"/>
            <param name="inbound-late-negotiation" value="false"/>
            <param name="rtp-timeout-sec" value="300"/>
            <param name="rtp-hold-timeout-sec" value="1800"/>
            <param name="enable-timer" value="false"/>
            <param name="manage-presence" value="false"/>
          </settings>
        </profile>
      </profiles>
    </configuration>
  </section>
  <section name="dialplan" description="Dialplan">
    <context name="callfleet">
      <extension name="answer">
        <condition field="destination_number" expression="^.*$">
          <action application="answer"/>
          <action application="park"/>
        </condition>
      </extension>
    </context>
  </section>
</document>
"#
    )
}

/// Ready while the SIP profile runs and inbound calls are not paused (a draining pod leaves the
/// dispatcher at once instead of waiting for OPTIONS probes).
const READY_SCRIPT: &str = r#"#!/bin/sh
# Rendered by callfleet-operator: FreeSWITCH readiness.
fs_cli -x "sofia status profile callfleet" 2>/dev/null | grep -q RUNNING || exit 1
[ "$(fs_cli -x 'fsctl pause_check inbound' 2>/dev/null | tr -d '[:space:]')" = "false" ] || exit 1
"#;

/// Pause inbound calls, then wait for the live ones to end, at most `CALLFLEET_DRAIN_SECONDS`.
const DRAIN_SCRIPT: &str = r#"#!/bin/sh
# Rendered by callfleet-operator: FreeSWITCH drain before stop (preStop hook).
fs_cli -x "fsctl pause inbound" >/dev/null 2>&1
deadline=$(( $(date +%s) + ${CALLFLEET_DRAIN_SECONDS:-330} ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  calls=$(fs_cli -x "show calls count" 2>/dev/null | grep -Eo '^[0-9]+ total' | grep -Eo '^[0-9]+')
  [ "${calls:-0}" -eq 0 ] && exit 0
  sleep 2
done
exit 0
"#;

/// SIP over UDP and TCP on `port`.
fn sip_ports(port: i32) -> Vec<ContainerPort> {
    ["UDP", "TCP"]
        .into_iter()
        .map(|protocol| ContainerPort {
            name: Some(format!("sip-{}", protocol.to_ascii_lowercase())),
            container_port: port,
            protocol: Some(protocol.into()),
            ..Default::default()
        })
        .collect()
}

/// Runs one of the ConfigMap's scripts with `/bin/sh` (ConfigMap files are not executable).
fn script(file: &str) -> ExecAction {
    ExecAction {
        command: Some(vec!["/bin/sh".into(), format!("{CONFIG_DIR}/{file}")]),
    }
}

fn writable_mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::Child;
    use super::super::fixtures::{call_cluster, find, render, xml_is_balanced};

    fn stateful_set_of(spec: Value) -> Value {
        let children = render(&call_cluster(spec));
        find(&children, "StatefulSet", "support-media")
            .to_value()
            .unwrap()
    }

    fn env_value(pod: &Value, name: &str) -> Value {
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| {
                e.get("value")
                    .cloned()
                    .unwrap_or_else(|| e["valueFrom"].clone())
            })
            .unwrap_or(Value::Null)
    }

    #[test]
    fn stateful_set_defaults() {
        let sts = stateful_set_of(json!({}));
        assert_eq!(sts["spec"]["replicas"], 2);
        assert_eq!(sts["spec"]["serviceName"], "support-media");
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
        let pod = &sts["spec"]["template"];
        assert_eq!(env_value(pod, "FREESWITCH_RTP_START"), "16384");
        assert_eq!(env_value(pod, "FREESWITCH_RTP_END"), "32767");
        assert_eq!(env_value(pod, "CALLFLEET_MAX_SESSIONS"), "1000");
        assert_eq!(env_value(pod, "CALLFLEET_DRAIN_SECONDS"), "330");
        assert_eq!(
            env_value(pod, "CALLFLEET_WORKER_URL"),
            "ws://support-worker.calls.svc:8080/ws/freeswitch"
        );
        assert_eq!(
            env_value(pod, "POD_IP"),
            json!({"fieldRef": {"fieldPath": "status.podIP"}})
        );
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 360);
        assert!(pod["spec"].get("hostNetwork").is_none());
        assert!(pod["spec"].get("affinity").is_none());
        let container = &pod["spec"]["containers"][0];
        assert_eq!(
            container["lifecycle"]["preStop"]["exec"]["command"],
            json!(["/bin/sh", "/etc/freeswitch/callfleet-drain.sh"])
        );
        let mounts = container["volumeMounts"].as_array().unwrap();
        assert!(mounts.iter().all(|m| m.get("subPath").is_none()));
        assert!(
            mounts
                .iter()
                .any(|m| m["name"] == "config" && m["mountPath"] == "/etc/freeswitch")
        );
        assert!(
            mounts
                .iter()
                .any(|m| m["name"] == "auth" && m["mountPath"] == "/etc/callfleet/auth")
        );
    }

    #[test]
    fn drain_timeout_sets_the_grace_period() {
        let sts = stateful_set_of(json!({"media": {"drainTimeoutSeconds": 900}}));
        let pod = &sts["spec"]["template"];
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 930);
        assert_eq!(env_value(pod, "CALLFLEET_DRAIN_SECONDS"), "900");
    }

    #[test]
    fn host_network_spreads_pods_across_nodes() {
        let sts = stateful_set_of(json!({"media": {"hostNetwork": true, "replicas": 3}}));
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(pod["hostNetwork"], true);
        assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
        let term = &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            [0];
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(
            term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "media"
        );
    }

    #[test]
    fn zero_replicas_is_allowed() {
        let sts = stateful_set_of(json!({"media": {"replicas": 0}}));
        assert_eq!(sts["spec"]["replicas"], 0);
    }

    #[test]
    fn headless_service_exposes_sip_on_both_transports() {
        let children = render(&call_cluster(json!({"media": {"sipPort": 5080}})));
        let svc = find(&children, "Service", "support-media")
            .to_value()
            .unwrap();
        assert_eq!(svc["spec"]["clusterIP"], "None");
        let ports = svc["spec"]["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 2);
        assert!(ports.iter().all(|p| p["port"] == 5080));
        let protocols: Vec<&Value> = ports.iter().map(|p| &p["protocol"]).collect();
        assert_eq!(protocols, [&json!("UDP"), &json!("TCP")]);
    }

    #[test]
    fn config_is_well_formed_and_follows_the_spec() {
        let children = render(&call_cluster(json!({
            "media": {"rtpPortRange": {"start": 20000, "end": 20999}, "maxSessionsPerPod": 400, "sipPort": 5080},
        })));
        let Child::ConfigMap(cm) = find(&children, "ConfigMap", "support-media-config") else {
            unreachable!()
        };
        let data = cm.data.as_ref().unwrap();
        let xml = &data["freeswitch.xml"];
        assert!(xml_is_balanced(xml), "{xml}");
        for needle in [
            r#"<param name="rtp-start-port" value="20000"/>"#,
            r#"<param name="rtp-end-port" value="20999"/>"#,
            r#"<param name="max-sessions" value="400"/>"#,
            r#"<param name="sip-port" value="5080"/>"#,
            r#"<param name="sip-ip" value="$${local_ip_v4}"/>"#,
            r#"<profile name="callfleet">"#,
            r#"<load module="mod_sofia"/>"#,
        ] {
            assert!(xml.contains(needle), "missing {needle}");
        }
        let drain = &data["callfleet-drain.sh"];
        assert!(drain.contains("fsctl pause inbound"));
        assert!(drain.contains("show calls count"));
        assert!(drain.contains("CALLFLEET_DRAIN_SECONDS"));
        assert!(data["callfleet-ready.sh"].contains("pause_check inbound"));
    }
}
