//! Tests of a configuration applied to the builder: code over environment over file, and
//! the settings (group protocol, instance id, token providers, secrets) reaching the
//! consumer's client. The configuration's own tests are in `config/tests.rs`.

use crate::config::testing::*;
use crate::config::*;
use crate::ConsumerBuilder;

#[test]
fn code_wins_over_environment_and_file() {
    let yaml = format!("{BASE}  max_in_flight: 10\n  commit_interval: 5s\n");
    let c = ConsumerConfig::load_str(&yaml, [("KAFKA_MAX_IN_FLIGHT", "20")]).unwrap();
    assert_eq!(c.max_in_flight, 20);
    let b = ConsumerBuilder::from_config(&c).max_in_flight(30);
    let debug = format!("{b:?}");
    assert!(debug.contains("max_in_flight: 30"), "{debug}");
    assert!(debug.contains("commit_interval: 5s"), "{debug}");
    let b = ConsumerBuilder::from_config(&c).set("auto.offset.reset", "latest");
    assert!(format!("{b:?}").contains("\"auto.offset.reset\": \"latest\""));
}

#[test]
fn a_reader_from_the_beginning_has_no_group() {
    let reader =
        "kafka:\n  bootstrap_servers: k:9092\n  topics: [prices]\n  read_from_beginning: true\n";
    let c = ConsumerConfig::load_str(reader, no_env()).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.read_from_beginning);
    assert!(!c.client_properties().contains_key("group.id"));
    c.check_client().unwrap_or_else(|e| panic!("{e}"));
    // The builder it makes builds without a group id.
    ConsumerBuilder::from_config(&c)
        .build(crate::handler_fn(|_: crate::Message| async { Ok(()) }))
        .unwrap_or_else(|e| panic!("{e}"));

    // From the environment, over a file with a group: the group is refused, by name.
    let errors = errors_of(BASE, &[("KAFKA_READ_FROM_BEGINNING", "true")]);
    assert_error(
        &errors,
        "kafka.group_id",
        "billing",
        &["not used with kafka.read_from_beginning", "KAFKA_GROUP_ID"],
    );
    let errors = errors_of(&format!("{reader}  static_assignment: true\n"), &[]);
    assert_error(
        &errors,
        "kafka.static_assignment",
        "true",
        &["not with kafka.read_from_beginning"],
    );
    let errors = errors_of(BASE, &[("KAFKA_READ_FROM_BEGINNING", "maybe")]);
    assert_error(
        &errors,
        "kafka.read_from_beginning",
        "maybe",
        &["true or false"],
    );
    // `false` from the environment turns a file's reader back into a group member.
    let c = ConsumerConfig::load_str(
        reader,
        [
            ("KAFKA_READ_FROM_BEGINNING", "false"),
            ("KAFKA_GROUP_ID", "g"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.read_from_beginning);

    // The builder refuses the same, for code that sets it there.
    let build = |b: ConsumerBuilder| {
        b.bootstrap_servers("k:9092")
            .topic("prices")
            .read_from_beginning()
            .build(crate::handler_fn(|_: crate::Message| async { Ok(()) }))
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(build(ConsumerBuilder::default()), None);
    let refused = build(ConsumerBuilder::default().group_id("g")).unwrap_or_default();
    assert!(
        refused.starts_with(
            "invalid configuration `group_id` = `g`: not used with read_from_beginning"
        ),
        "{refused}"
    );
    let refused = build(ConsumerBuilder::default().static_assignment()).unwrap_or_default();
    assert!(refused.contains("`static_assignment`"), "{refused}");
    let refused = build(ConsumerBuilder::default().exactly_once("t")).unwrap_or_default();
    assert!(refused.contains("`exactly_once` = `t`"), "{refused}");
}

#[test]
fn group_protocol_comes_from_file_or_environment_and_reaches_librdkafka() {
    // Classic by default, and said so to librdkafka (whose default may change).
    let c = ConsumerConfig::from_yaml_str(BASE).unwrap();
    assert_eq!(c.group_protocol, GroupProtocol::Classic);
    assert_eq!(c.client_properties()["group.protocol"], "classic");

    let c = ConsumerConfig::from_yaml_str(&format!(
        "{BASE}  group_protocol: consumer\n  librdkafka:\n    group.remote.assignor: uniform\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.group_protocol, GroupProtocol::Consumer);
    let props = c.client_properties();
    assert_eq!(props["group.protocol"], "consumer");
    assert!(!props.contains_key("session.timeout.ms"), "{props:?}");
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    // librdkafka accepts what the configuration sets.
    c.check_client().unwrap_or_else(|e| panic!("{e}"));
    assert!(format!("{:?}", ConsumerBuilder::from_config(&c))
        .contains(r#""group.protocol": "consumer""#));

    // The environment wins over the file; names are taken in any case.
    let loaded = ConsumerConfig::resolve(
        Some(&format!("{BASE}  group_protocol: classic\n")),
        [("KAFKA_GROUP_PROTOCOL", " Consumer ")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.config.group_protocol, GroupProtocol::Consumer);
    assert_eq!(
        loaded.sources.of("kafka.group_protocol"),
        Source::Env("KAFKA_GROUP_PROTOCOL".into())
    );
    // It round-trips through the YAML shown by `config check`.
    let back = ConsumerConfig::from_yaml_str(&loaded.config.to_yaml()).unwrap();
    assert_eq!(back.group_protocol, GroupProtocol::Consumer);
}

#[test]
fn group_instance_id_comes_from_file_or_environment_and_reaches_librdkafka() {
    // Unset by default: a dynamic member.
    let c = ConsumerConfig::from_yaml_str(BASE).unwrap();
    assert_eq!(c.group_instance_id, None);
    assert!(!c.client_properties().contains_key("group.instance.id"));

    let c = ConsumerConfig::from_yaml_str(&format!("{BASE}  group_instance_id: billing-0\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.group_instance_id.as_deref(), Some("billing-0"));
    assert_eq!(c.client_properties()["group.instance.id"], "billing-0");
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    c.check_client().unwrap_or_else(|e| panic!("{e}"));
    assert!(format!("{:?}", ConsumerBuilder::from_config(&c))
        .contains(r#""group.instance.id": "billing-0""#));

    // The environment wins over the file, and is recorded as the source.
    let loaded = ConsumerConfig::resolve(
        Some(&format!("{BASE}  group_instance_id: billing-0\n")),
        [("KAFKA_GROUP_INSTANCE_ID", " billing-7 ")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded.config.group_instance_id.as_deref(),
        Some("billing-7")
    );
    assert_eq!(
        loaded.sources.of("kafka.group_instance_id"),
        Source::Env("KAFKA_GROUP_INSTANCE_ID".into())
    );
    let back = ConsumerConfig::from_yaml_str(&loaded.config.to_yaml()).unwrap();
    assert_eq!(back.group_instance_id.as_deref(), Some("billing-7"));
}

#[test]
fn a_bad_group_instance_id_is_refused_with_kafkas_rule() {
    let errors = errors_of(&format!("{BASE}  group_instance_id: \"billing 0\"\n"), &[]);
    assert_error(
        &errors,
        "kafka.group_instance_id",
        "billing 0",
        &["line 5", "ASCII letters, digits"],
    );
    let errors = errors_of(BASE, &[("KAFKA_GROUP_INSTANCE_ID", "pod/0")]);
    assert_error(
        &errors,
        "kafka.group_instance_id",
        "pod/0",
        &["from KAFKA_GROUP_INSTANCE_ID", "ASCII letters"],
    );
    let errors = errors_of(&format!("{BASE}  group_instance_id: \"\"\n"), &[]);
    assert_error(
        &errors,
        "kafka.group_instance_id",
        "",
        &["cannot be empty", "dynamic member"],
    );
    // The typed setting, not the pass-through.
    let errors = errors_of(
        &format!("{BASE}  librdkafka:\n    group.instance.id: billing-0\n"),
        &[],
    );
    assert_error(
        &errors,
        "kafka.librdkafka[\"group.instance.id\"]",
        "billing-0",
        &["use kafka.group_instance_id"],
    );
    // The builder refuses it too, whichever way it is given.
    for builder in [
        ConsumerBuilder::default().group_instance_id("a b"),
        ConsumerBuilder::default().set("group.instance.id", ""),
    ] {
        let e = builder
            .bootstrap_servers("localhost:9092")
            .group_id("g")
            .topic("t")
            .build(crate::handler_fn(|_: crate::Message| async { Ok(()) }))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("group.instance.id"), "{e}");
    }
}

#[test]
fn the_builder_refuses_classic_settings_with_the_consumer_protocol() {
    let builder = || {
        crate::Consumer::builder()
            .bootstrap_servers("localhost:9092")
            .group_id("g")
            .topic("t")
    };
    let handler = || crate::handler_fn(|_: crate::Message| async { Ok(()) });
    for (key, value, words) in [
        (
            "session.timeout.ms",
            "6000",
            "group.consumer.session.timeout.ms",
        ),
        (
            "heartbeat.interval.ms",
            "500",
            "group.consumer.heartbeat.interval.ms",
        ),
        (
            "partition.assignment.strategy",
            "range",
            "group.remote.assignor",
        ),
        (
            "group.protocol.type",
            "consumer",
            "classic group protocol only",
        ),
    ] {
        // Whichever comes first: the protocol or the property.
        for consumer_first in [true, false] {
            let b = if consumer_first {
                builder()
                    .group_protocol(GroupProtocol::Consumer)
                    .set(key, value)
            } else {
                builder()
                    .set(key, value)
                    .group_protocol(GroupProtocol::Consumer)
            };
            match b.build(handler()) {
                Err(crate::Error::Config {
                    key: k,
                    value: v,
                    reason,
                }) => {
                    assert_eq!((k.as_str(), v.as_str()), (key, value));
                    assert!(reason.contains("group.protocol=consumer"), "{reason}");
                    assert!(reason.contains(words), "{reason}");
                }
                Err(other) => panic!("{key}: unexpected error {other}"),
                Ok(_) => panic!("{key}={value} was accepted with the consumer protocol"),
            }
        }
        // The classic protocol takes it.
        builder()
            .group_protocol(GroupProtocol::Classic)
            .set(key, value)
            .build(handler())
            .unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    builder()
        .group_protocol(GroupProtocol::Consumer)
        .set("group.remote.assignor", "uniform")
        .build(handler())
        .unwrap_or_else(|e| panic!("{e}"));
    // The raw property is checked as well.
    match builder().set("group.protocol", "kip848").build(handler()) {
        Err(crate::Error::Config { key, reason, .. }) => {
            assert_eq!(key, "group.protocol");
            assert!(reason.contains("classic, consumer"), "{reason}");
        }
        other => panic!("expected a config error, got {:?}", other.err()),
    }
    // A later call wins over the configuration, as for every setting.
    let c = ConsumerConfig::from_yaml_str(&format!("{BASE}  group_protocol: consumer\n")).unwrap();
    ConsumerBuilder::from_config(&c)
        .group_protocol(GroupProtocol::Classic)
        .set("session.timeout.ms", "6000")
        .build(handler())
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn gssapi_is_refused_because_the_build_has_no_kerberos() {
    let yaml = format!("{BASE}  security:\n    protocol: sasl_ssl\n    sasl_mechanism: GSSAPI\n");
    let errors = errors_of(&yaml, &[]);
    assert_error(
        &errors,
        "kafka.security.sasl_mechanism",
        "GSSAPI",
        &[
            "GSSAPI (Kerberos) is not supported",
            "built without Kerberos",
            "SCRAM-SHA-512",
        ],
    );
    let errors = errors_of(
        &format!("{BASE}  security:\n    protocol: sasl_ssl\n"),
        &[("KAFKA_SASL_MECHANISM", "gssapi")],
    );
    assert_error(
        &errors,
        "kafka.security.sasl_mechanism",
        "gssapi",
        &["(from KAFKA_SASL_MECHANISM)", "built without Kerberos"],
    );
    assert!(!SaslMechanism::NAMES.contains(&"GSSAPI"));
    assert_eq!("PLAIN".parse(), Ok(SaslMechanism::Plain));
    // Past the configuration, librdkafka itself refuses it when the client is built.
    let refused = crate::ConsumerBuilder::default()
        .bootstrap_servers("localhost:9092")
        .group_id("g")
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanism", "GSSAPI")
        .check_client()
        .expect_err("GSSAPI accepted by librdkafka");
    let shown = refused.to_string();
    assert!(shown.contains("GSSAPI"), "{shown}");
}

#[test]
fn secrets_never_show_in_debug_display_or_serialized_output() {
    let yaml = format!(
        "{BASE}  security:\n    protocol: sasl_ssl\n    sasl_mechanism: PLAIN\n    \
         sasl_username: app\n    sasl_password: hunter2\n  librdkafka:\n    \
         sasl.oauthbearer.client.secret: s3cret\n"
    );
    let c = ConsumerConfig::from_yaml_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
    for shown in [
        format!("{c:?}"),
        format!("{:?}", ConsumerBuilder::from_config(&c)),
        c.to_yaml(),
        serde_json::to_string(&c).unwrap(),
        c.security.sasl_password.as_ref().unwrap().to_string(),
    ] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains(REDACTED), "{shown}");
    }
    assert!(format!("{c:?}").contains("app"));
}

const OIDC: &str = "  security:\n    protocol: sasl_ssl\n    sasl_mechanism: OAUTHBEARER\n    \
                    oauthbearer:\n      token_endpoint: https://idp.example.com/oauth2/token\n      \
                    client_id: billing\n      client_secret: oidc-s3cret\n      scope: kafka\n";

#[test]
fn an_oidc_token_endpoint_from_the_file_or_the_environment_sets_the_builders_provider() {
    let from_file = ConsumerConfig::load_str(&format!("{BASE}{OIDC}"), no_env())
        .unwrap_or_else(|e| panic!("{e}"));
    let from_env = ConsumerConfig::load_str(
        BASE,
        [
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "OAUTHBEARER"),
            (
                "KAFKA_OAUTHBEARER_TOKEN_ENDPOINT",
                "https://idp.example.com/oauth2/token",
            ),
            ("KAFKA_OAUTHBEARER_CLIENT_ID", "billing"),
            ("KAFKA_OAUTHBEARER_CLIENT_SECRET", "oidc-s3cret"),
            ("KAFKA_OAUTHBEARER_SCOPE", "kafka"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(from_file, from_env);
    let o = &from_file.security.oauthbearer;
    assert_eq!(
        o.client_secret.as_ref().map(Secret::expose),
        Some("oidc-s3cret")
    );
    assert_eq!(o.scope.as_deref(), Some("kafka"));
    assert!(
        from_file.warnings().is_empty(),
        "{:?}",
        from_file.warnings()
    );
    #[cfg(feature = "oidc")]
    {
        let p = from_file
            .security
            .oidc_token_provider()
            .expect("a provider");
        assert_eq!(p.token_endpoint(), "https://idp.example.com/oauth2/token");
        assert_eq!(p.client_id(), "billing");
        let builder = format!("{:?}", ConsumerBuilder::from_config(&from_file));
        assert!(
            builder.contains("oauth_token_provider: Some(OidcTokenProvider {")
                && builder.contains("idp.example.com"),
            "{builder}"
        );
    }
    // Secrets stay hidden.
    for shown in [
        format!("{from_file:?}"),
        format!("{:?}", ConsumerBuilder::from_config(&from_file)),
        from_file.to_yaml(),
    ] {
        assert!(!shown.contains("oidc-s3cret"), "{shown}");
    }
}

const MSK: &str = "  security:\n    protocol: sasl_ssl\n    sasl_mechanism: OAUTHBEARER\n    \
                   msk_iam:\n      region: eu-west-1\n      profile: kafka-consumer\n";

#[test]
fn msk_iam_from_the_file_or_the_environment() {
    let from_file =
        ConsumerConfig::load_str(&format!("{BASE}{MSK}"), no_env()).map_err(|e| e.to_string());
    let from_env = ConsumerConfig::load_str(
        BASE,
        [
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "OAUTHBEARER"),
            ("KAFKA_MSK_IAM_REGION", "eu-west-1"),
            ("KAFKA_MSK_IAM_PROFILE", "kafka-consumer"),
        ],
    )
    .map_err(|e| e.to_string());
    assert_eq!(from_file, from_env);
    #[cfg(not(feature = "msk-iam"))]
    assert!(
        from_file.as_ref().is_err_and(
            |e| e.contains("kafka.security.msk_iam.region") && e.contains("`msk-iam` feature")
        ),
        "{from_file:?}"
    );
    #[cfg(feature = "msk-iam")]
    {
        let c = from_file.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.security.msk_iam.region.as_deref(), Some("eu-west-1"));
        let p = c.security.msk_iam_token_provider().expect("a provider");
        assert_eq!(p.region(), "eu-west-1");
        assert_eq!(p.profile_name(), Some("kafka-consumer"));
        // What the builder got from the configuration.
        let builder = format!("{:?}", ConsumerBuilder::from_config(&c));
        assert!(
            builder.contains(
                r#"oauth_token_provider: Some(MskIamTokenProvider { region: "eu-west-1", profile: Some("kafka-consumer")"#
            ),
            "{builder}"
        );
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }
}
