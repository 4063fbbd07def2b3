//! Secrets out of what runbookd prints: URLs for logs and error messages, card numbers
//! out of every string that leaves a run ([`mask_cards`]), key-like words out of log lines
//! and recordings ([`secrets_in`]).

/// Query parameters whose values are secrets (libpq's `password`, Redis's `token`, …).
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "token",
    "secret",
    "sslpassword",
    "api_key",
    "apikey",
    "auth",
];

/// A URL for logs and error messages: the userinfo password and secret query parameters
/// replaced by `***`. Parsed, not pattern-matched; what does not parse as a URL is not
/// shown at all.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "<a URL that does not parse>".into();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s));
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// `text` with every card number masked to its first 6 and last 4 digits
/// (`4242 4242 4242 4242` → `4242 42** **** 4242`): 13 to 19 digits, in groups separated by
/// single spaces or dashes, starting with 2 to 6 (the payment-card industries of ISO/IEC
/// 7812: Mastercard, Amex, Diners, JCB, Visa, Discover, UnionPay, Maestro — which leaves
/// millisecond timestamps and most ids alone), passing the Luhn check. Payments data reaches
/// runs (log excerpts, task arguments, a playbook's own log lines); PCI DSS allows these
/// ten digits to be shown, no more. Separators and everything else are kept as they were.
pub fn mask_cards(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    // Cheap way out: fewer than 13 digits cannot hold a card number.
    if bytes.iter().filter(|b| b.is_ascii_digit()).count() < 13 {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = bytes.to_vec();
    let mut masked = false;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        // Digits inside an identifier (a UUID's `9bb6-682702193151`, a hex hash) are not a
        // card number, however their digits add up: skip a word of letters, digits and
        // dashes that holds a letter.
        let word_end = bytes[i..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'-'))
            .map_or(bytes.len(), |n| i + n);
        let word_start = bytes[..i]
            .iter()
            .rposition(|b| !(b.is_ascii_alphanumeric() || *b == b'-'))
            .map_or(0, |n| n + 1);
        if bytes[word_start..word_end]
            .iter()
            .any(u8::is_ascii_alphabetic)
        {
            i = word_end.max(i + 1);
            continue;
        }
        // The groups of digits from here: (start, end) of each, joined by one separator.
        let mut groups = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            groups.push((start, j));
            if j + 1 < bytes.len()
                && matches!(bytes[j], b' ' | b'-')
                && bytes[j + 1].is_ascii_digit()
            {
                j += 1;
            } else {
                break;
            }
        }
        // From each group on, the longest run of whole groups that is a card number.
        let mut g = 0;
        while g < groups.len() {
            let mut found = None;
            let mut digits = Vec::new();
            for (h, &(a, b)) in groups.iter().enumerate().skip(g) {
                digits.extend_from_slice(&bytes[a..b]);
                if digits.len() > 19 {
                    break;
                }
                if digits.len() >= 13 && matches!(digits[0], b'2'..=b'6') && luhn(&digits) {
                    found = Some((h, digits.len()));
                }
            }
            match found {
                Some((last, n)) => {
                    let mut seen = 0;
                    for &(a, b) in &groups[g..=last] {
                        for slot in &mut out[a..b] {
                            if seen >= 6 && seen < n - 4 {
                                *slot = b'*';
                            }
                            seen += 1;
                        }
                    }
                    masked = true;
                    g = last + 1;
                }
                None => g += 1,
            }
        }
        i = j.max(i + 1);
    }
    if !masked {
        return std::borrow::Cow::Borrowed(text);
    }
    // Only ASCII digits were replaced by ASCII: still UTF-8.
    match String::from_utf8(out) {
        Ok(s) => std::borrow::Cow::Owned(s),
        Err(_) => std::borrow::Cow::Borrowed(text),
    }
}

/// `v` with [`mask_cards`] applied to every string in it (map keys included).
pub fn mask_cards_json(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(mask_cards(s).into_owned()),
        Value::Array(a) => a.iter().map(mask_cards_json).collect(),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| (mask_cards(k).into_owned(), mask_cards_json(v)))
            .collect(),
        other => other.clone(),
    }
}

/// The Luhn check over ASCII digits.
fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, d)| {
            let d = u32::from(d - b'0');
            if k % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Prefixes of Stripe keys and secrets: a log line must not carry them into a run's record.
const KEY_PREFIXES: [&str; 7] = [
    "sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_", "pk_live_", "pk_test_",
];
/// `name=value` pairs whose value is a secret.
pub const SECRET_NAMES: [&str; 6] = [
    "password",
    "passwd",
    "token",
    "secret",
    "api_key",
    "authorization",
];

/// `line` with anything that looks like a key replaced by `[redacted]`: Stripe keys by their
/// prefixes, `Bearer X`, and the values of `password=`, `token=`, `secret=`… pairs; and card
/// numbers masked ([`crate::redact::mask_cards`]).
pub fn secrets_in(line: &str) -> String {
    // Most strings (a status, a URL, an id) hold nothing to redact: every replacement below
    // needs a key prefix, the word `bearer` or a secret's name somewhere in the string, so
    // without one the words are left as they are and only card numbers are looked for.
    let lower = line.to_ascii_lowercase();
    if !KEY_PREFIXES.iter().any(|p| line.contains(p))
        && !lower.contains("bearer")
        && !SECRET_NAMES.iter().any(|s| lower.contains(s))
    {
        return crate::redact::mask_cards(line).into_owned();
    }
    let mut out = Vec::new();
    let mut after_bearer = false;
    for word in line.split(' ') {
        let lower = word.to_ascii_lowercase();
        let red = if after_bearer && !word.is_empty() {
            "[redacted]".to_string()
        } else if let Some(at) = KEY_PREFIXES.iter().filter_map(|p| word.find(p)).min() {
            format!("{}[redacted]", &word[..at])
        } else if let Some((name, _)) = word.split_once(['=', ':']).filter(|(n, v)| {
            !v.is_empty()
                && SECRET_NAMES.iter().any(|s| {
                    n.to_ascii_lowercase()
                        .trim_matches(['"', '\''])
                        .ends_with(s)
                })
        }) {
            format!("{name}=[redacted]")
        } else {
            word.to_string()
        };
        after_bearer = lower == "bearer";
        out.push(red);
    }
    // Card numbers too (first 6 and last 4 shown): excerpts of the app's logs carry them.
    crate::redact::mask_cards(&out.join(" ")).into_owned()
}

#[cfg(test)]
mod tests {

    #[test]
    fn digits_inside_an_identifier_are_left_alone() {
        // A run id whose random part ends in Luhn-valid digits (`6-682702193151`) is no card.
        let id = "01a24e34-c3cd-712d-9bb6-682702193151";
        assert_eq!(mask_cards(id), id);
        assert_eq!(
            mask_cards(&format!("run {id} done")),
            format!("run {id} done")
        );
        assert_ne!(
            mask_cards("card 4242-4242-4242-4242 declined"),
            "card 4242-4242-4242-4242 declined"
        );
    }
    use super::{mask_cards, mask_cards_json, redact_url};

    /// The test numbers of every card brand (Stripe's list), as written in the wild.
    const CARDS: &[(&str, &str)] = &[
        ("visa", "4242424242424242"),
        ("visa (debit)", "4000056655665556"),
        ("visa 13 digits", "4222222222222"),
        ("mastercard", "5555555555554444"),
        ("mastercard 2-series", "2223003122003222"),
        ("mastercard (debit)", "5200828282828210"),
        ("mastercard (prepaid)", "5105105105105100"),
        ("amex", "378282246310005"),
        ("amex", "371449635398431"),
        ("discover", "6011111111111117"),
        ("discover", "6011000990139424"),
        ("discover (debit)", "6011981111111113"),
        ("diners", "3056930009020004"),
        ("diners 14 digits", "36227206271667"),
        ("jcb", "3566002020360505"),
        ("unionpay", "6200000000000005"),
        ("unionpay (debit)", "6200000000000047"),
        ("unionpay 19 digits", "6205500000000000004"),
        ("maestro", "6759649826438453"),
        ("cartes bancaires", "4000002500001001"),
    ];

    fn masked(card: &str) -> String {
        let n = card.len();
        format!("{}{}{}", &card[..6], "*".repeat(n - 10), &card[n - 4..])
    }

    #[test]
    fn every_brands_test_number_is_masked_to_six_and_four_however_written() {
        for (brand, card) in CARDS {
            assert!(
                super::luhn(card.as_bytes()),
                "{brand} {card} is a test number"
            );
            let want = masked(card);
            assert_eq!(mask_cards(card), want, "{brand}");
            let line = format!("charge failed for card {card}, retrying");
            assert_eq!(
                mask_cards(&line),
                format!("charge failed for card {want}, retrying"),
                "{brand}"
            );
            // In groups of four, with spaces or dashes: the separators stay.
            for sep in [" ", "-"] {
                let grouped: Vec<String> = card
                    .as_bytes()
                    .chunks(4)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                let written = grouped.join(sep);
                let out = mask_cards(&written);
                assert_eq!(out.replace(sep, ""), want, "{brand}: {written} → {out}");
                assert_eq!(out.len(), written.len(), "{brand}");
            }
        }
        assert_eq!(mask_cards("4242 4242 4242 4242"), "4242 42** **** 4242");
        assert_eq!(
            mask_cards("pan=4242-4242-4242-4242;"),
            "pan=4242-42**-****-4242;"
        );
        assert_eq!(
            mask_cards("amex 3782 822463 10005 and visa 4242424242424242"),
            "amex 3782 82**** *0005 and visa 424242******4242"
        );
        // A card number after another number in the same run of groups.
        assert_eq!(
            mask_cards("order 12345 4242 4242 4242 4242"),
            "order 12345 4242 42** **** 4242"
        );
    }

    #[test]
    fn numbers_that_fail_luhn_or_are_not_cards_are_left_alone() {
        for text in [
            "4242424242424241",            // Luhn fails
            "4242 4242 4242 4241",         // Luhn fails, grouped
            "5555555555554445",            // Luhn fails
            "378282246310006",             // Luhn fails
            "424242424242",                // 12 digits
            "42424242424242424242",        // 20 digits
            "1733520000000",               // a millisecond timestamp
            "1733520000000 1733520000001", // two of them
            "0000000000000000",            // passes Luhn, no card starts with 0
            "4242  4242 4242 4242",        // two spaces: not one number
            "uuid 01a24d41-dc28-73b5-885c-361ba71275ca",
            "nothing here",
        ] {
            assert_eq!(mask_cards(text), text, "{text}");
        }
        let v = serde_json::json!({"card": "4242424242424242", "n": 4242424242424242u64,
            "list": ["x 5555555555554444"], "4242424242424242": true});
        assert_eq!(
            mask_cards_json(&v),
            serde_json::json!({"card": "424242******4242", "n": 4242424242424242u64,
                "list": ["x 555555******4444"], "424242******4242": true})
        );
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/pay"),
            "postgres://app:***@db:5432/pay"
        );
        assert_eq!(redact_url("sqlite://runbookd.db"), "sqlite://runbookd.db");
        assert_eq!(redact_url("postgres://app@db/pay"), "postgres://app@db/pay");
        assert_eq!(
            redact_url("postgres://db/pay?user=app&password=s3cret&sslmode=require"),
            "postgres://db/pay?user=app&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("redis://:hunter2@cache:6379/0?Token=abc"),
            "redis://:***@cache:6379/0?Token=***"
        );
        assert!(!redact_url("not a url s3cret").contains("s3cret"));
    }
}
