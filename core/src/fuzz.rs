//! Property tests over what this crate reads from clients: channel names and their NATS
//! subject encoding, token parsing, and publication data checked as Socket.IO envelopes.
//! Bounded in cases so they run with the normal test suite; failing inputs proptest finds
//! are kept in `proptest-regressions/` and replayed first.

use proptest::prelude::*;

use crate::auth::{Identity, Verifier};
use crate::config::{AuthConfig, Config};
use crate::rules::Action;
use crate::{channel, envelope, subjects};

/// Strings shaped like tokens: three dot-separated base64url-ish parts, or anything.
fn token_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            "[A-Za-z0-9_-]{0,40}",
            "[A-Za-z0-9_=-]{0,60}",
            "[A-Za-z0-9_-]{0,40}"
        )
            .prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
        // A real header and payload with a wrong signature reach the claims checks.
        "[A-Za-z0-9_-]{0,60}"
            .prop_map(|payload| format!("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{payload}.AAAA")),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(herald_testkit::fuzz::config())]

    #[test]
    fn fuzz_channels_round_trip_through_subject_tokens(name in any::<String>()) {
        let mut token = String::new();
        subjects::encode_token(&name, &mut token);
        prop_assert!(!token.contains(['.', '*', '>', ' ', '\t', '\r', '\n']), "{}", token);
        prop_assert_eq!(subjects::decode_token(&token), Some(name.clone()));
        let _ = subjects::decode_token(&name);
        let _ = channel::validate(&name);
        let _ = channel::namespace(&name);
    }

    #[test]
    fn fuzz_tokens_verify_or_are_refused(token in token_text()) {
        let verifier = Verifier::new(&AuthConfig {
            anonymous: true,
            hmac_secret: "secret".into(),
            ..AuthConfig::default()
        })
        .expect("a valid auth config");
        // Whatever the input, a token is checked: never anonymous, never a panic.
        if let Ok(identity) = verifier.verify(Some(&token)) {
            prop_assert_ne!(identity, Identity::anonymous());
        }
    }

    #[test]
    fn fuzz_envelopes_are_checked_without_panicking(
        data in prop_oneof![
            any::<String>(),
            ("[a-z:]{0,12}", "[\\[\\]{}\":,0-9a-z_ ]{0,60}").prop_map(|(event, args)| {
                format!(r#"{{"event":"{event}","args":[{args}]}}"#)
            }),
        ],
        attachments in 0usize..12,
    ) {
        let _ = envelope::check_event_name(&data);
        let _ = envelope::check_attachments(&data, attachments);
        let _ = envelope::Envelope::decode(&data);
    }

    #[test]
    fn fuzz_permissions_of_any_channel(name in any::<String>(), user in "[a-z,#]{0,8}") {
        let channels = Config::default().channels;
        let who = Identity { user, ..Identity::anonymous() };
        for action in [Action::Subscribe, Action::Publish, Action::ReadHistory] {
            let _ = channels.authorize(&name, action, &who);
        }
    }
}
