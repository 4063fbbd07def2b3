//! Property tests for every parser of outside input: whatever bytes arrive — an
//! Alertmanager webhook, a Stripe signature header, a breaker value in Redis, an escalation
//! table, a scenario file, a duration, a cron expression — the answer is a value or a clear
//! error, never a panic; and what runbookd writes itself reads back equal.

use std::time::Duration;

use hmac::{Hmac, Mac};
use proptest::prelude::*;
use sha2::Sha256;

use crate::{
    config::{BreakerPreset, Config},
    escalation::Table,
    primitives::{
        breaker::layout::{pickle, Codec},
        webhooks::verify_signature,
    },
    triggers::{alertmanager, parse_cron},
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// JSON that looks like an Alertmanager payload, with arbitrary values in its fields.
fn webhook_like() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("4".to_string()), "\\PC{0,4}"],
        prop_oneof![
            Just("firing".to_string()),
            Just("resolved".to_string()),
            "\\PC{0,8}"
        ],
        "\\PC{0,40}",
        "\\PC{0,30}",
        proptest::collection::vec(("\\PC{0,12}", "\\PC{0,12}"), 0..5),
    )
        .prop_map(|(version, status, starts, fingerprint, labels)| {
            let labels: serde_json::Map<String, serde_json::Value> = labels
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            serde_json::json!({
                "version": version, "status": status, "receiver": "r", "groupKey": "g",
                "alerts": [{ "status": status, "labels": labels, "annotations": {},
                             "startsAt": starts, "endsAt": "", "fingerprint": fingerprint }]
            })
            .to_string()
        })
}

fn sign(payload: &[u8], secret: &[u8], t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(payload);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn alertmanager_payloads_parse_or_fail_cleanly(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = alertmanager::parse(&body);
    }

    #[test]
    fn alertmanager_like_json_parses_or_names_the_field(body in webhook_like()) {
        if let Err(e) = alertmanager::parse(body.as_bytes()) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn stripe_signature_headers_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..256),
        header in "\\PC{0,120}",
        secret in proptest::collection::vec(any::<u8>(), 0..64),
        now in any::<i64>(),
    ) {
        let _ = verify_signature(&payload, &header, &secret, Duration::from_secs(300), now);
    }

    #[test]
    fn what_stripe_signs_verifies(
        payload in proptest::collection::vec(any::<u8>(), 0..256),
        secret in proptest::collection::vec(any::<u8>(), 1..64),
        t in 1_000_000_000i64..4_000_000_000,
    ) {
        let header = sign(&payload, &secret, t);
        prop_assert_eq!(verify_signature(&payload, &header, &secret, Duration::from_secs(300), t).ok(), Some(t));
        let mut other = secret.clone();
        other[0] ^= 1;
        prop_assert!(verify_signature(&payload, &header, &other, Duration::from_secs(300), t).is_err());
    }

    #[test]
    fn breaker_values_from_redis_decode_or_fail_cleanly(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        for preset in [BreakerPreset::Django, BreakerPreset::Plain] {
            let c = Codec(preset);
            let _ = c.decode_state("k", Some(&raw));
            let _ = c.decode_failures("k", Some(&raw));
            let _ = c.decode_time("k", Some(&raw));
        }
    }

    #[test]
    fn pickled_breaker_values_read_back_equal(failures in any::<i64>(), at in -1e12f64..1e12, state in "(closed|open|half_open)") {
        let c = Codec(BreakerPreset::Django);
        prop_assert_eq!(c.decode_failures("k", Some(&pickle(&failures))).ok(), Some(failures));
        prop_assert_eq!(c.decode_time("k", Some(&pickle(&at))).ok(), Some(Some(at)));
        prop_assert!(c.decode_state("k", Some(&pickle(&state))).is_ok());
    }

    #[test]
    fn escalation_tables_parse_or_fail_cleanly(text in "\\PC{0,200}") {
        let _ = Table::parse(&text, &[]);
    }

    #[test]
    fn escalation_like_tables_parse_or_say_where(name in "\\PC{0,10}", condition in "\\PC{0,40}", repeat in "\\PC{0,10}") {
        let text = format!(
            "[[levels]]\nname = {}\ncondition = {}\nrepeat = {}\n",
            toml::Value::String(name), toml::Value::String(condition), toml::Value::String(repeat)
        );
        if let Err(e) = Table::parse(&text, &[]) {
            prop_assert!(e.to_string().contains("levels[0]"), "{}", e);
        }
    }

    #[test]
    fn scenario_files_parse_or_fail_cleanly(text in "\\PC{0,200}") {
        let _ = toml::from_str::<crate::sim::scenario::Scenario>(&text);
    }

    #[test]
    fn durations_in_configuration_parse_or_name_the_key(value in "\\PC{0,20}") {
        let env = vec![("RUNBOOKD_PLAYBOOKS__TIMEOUT".to_string(), value)];
        if let Err(e) = Config::load(None, env) {
            prop_assert!(e.to_string().contains("playbooks.timeout"), "{}", e);
        }
    }

    #[test]
    fn cron_expressions_parse_or_fail_cleanly(expr in "[0-9*/,\\- A-Za-z?#LW]{0,40}") {
        let _ = parse_cron(&expr);
    }

    /// A log line is scanned for card numbers only up to its cut plus a margin
    /// (`primitives/core.rs`): whatever the line, no digit that masking the whole line
    /// would hide is shown by masking the scanned part.
    #[test]
    fn masking_the_kept_part_of_a_line_hides_what_masking_the_whole_would(
        before in "[0-9a-z \\-]{0,80}",
        card in prop_oneof![
            Just("4242424242424242"), Just("4242 4242 4242 4242"), Just("4-2-4-2-4-2-4-2-4-2-4-2-4-2-4-2"),
            Just("378282246310005"), Just("6011111111111117"), Just("5555-5555-5555-4444")
        ],
        after in "[0-9a-z \\-]{0,80}",
        limit in 1usize..120,
    ) {
        let line = format!("{before}{card}{after}");
        let whole = crate::redact::mask_cards(&line);
        let whole = crate::text::truncate(&whole, limit);
        let scanned = crate::text::prefix(&line, limit + crate::primitives::CARD_MARGIN);
        let masked = crate::redact::mask_cards(scanned);
        let kept = crate::text::truncate_from(&masked, line.len(), limit);
        prop_assert_eq!(whole.len(), kept.len());
        for (w, k) in whole.bytes().zip(kept.bytes()) {
            prop_assert!(!(w == b'*' && k != b'*'), "{} shows what {} hides", kept, whole);
        }
    }
}
