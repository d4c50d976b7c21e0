//! Property tests over every parser that reads what clients send: Engine.IO packets and
//! polling payloads, Socket.IO packets and binary assembly, Herald's reserved events, the
//! native command decoder and the recovery offset string. Each runs a bounded number of
//! cases in the normal test suite; no input may panic, and where an encoder exists what
//! it writes must parse back to the same thing. A seed corpus (`fuzz/corpus.jsonl`) is
//! replayed on every run, and so are the failing inputs proptest finds, which it keeps in
//! `proptest-regressions/`.

use bytes::Bytes;
use herald_proto::bus::v1::Position;
use proptest::prelude::*;
use serde_json::value::RawValue;

use crate::native::command;
use crate::socketio::binary::Assembler;
use crate::socketio::offsets::{self, Marks};
use crate::socketio::{engine, event, packet, reserved};

/// Text that looks like protocol input often enough to reach deep into the parsers:
/// digits, separators, JSON punctuation and the occasional anything.
fn protocol_text() -> impl Strategy<Value = String> {
    let atoms = prop_oneof![
        Just("0".to_string()),
        Just("4".to_string()),
        Just("5".to_string()),
        Just("2".to_string()),
        Just("-".to_string()),
        Just("/".to_string()),
        Just(",".to_string()),
        Just("\u{1e}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("\"".to_string()),
        Just(r#"{"_placeholder":true,"num":0}"#.to_string()),
        Just(r#""herald:history""#.to_string()),
        Just("b".to_string()),
        "[0-9]{1,25}",
        "[a-z:#]{1,8}",
        any::<String>(),
    ];
    prop::collection::vec(atoms, 0..24).prop_map(|parts| parts.concat())
}

/// Every parser on one input: none may panic, and what parses must round-trip.
fn every_parser(text: &str) {
    if let Ok(packet) = engine::Packet::decode_text(text) {
        assert_eq!(packet.encode_text().as_deref(), Some(text));
    }
    let _ = engine::decode_payload(text);
    if let Ok(packet) = packet::Packet::decode(text) {
        assert_eq!(
            packet::Packet::decode(&packet.encode()).ok(),
            Some(packet.clone())
        );
        let mut assembler = Assembler::default();
        let _ = assembler.packet(packet.clone());
        let _ = assembler.attachment(Bytes::from_static(b"x"));
        if let Ok((name, args)) = packet.event() {
            let _ = reserved::parse(name, args);
        }
    }
    let _ = command::parse(text);
    let _ = offsets::parse(text);
    let _ = event::decode(text, &[]);
}

/// Inputs kept because they once mattered (attacks of docs/security.md, edge cases of the
/// parsers), one JSON string per line of `fuzz/corpus.jsonl`; add what fuzzing finds.
#[test]
fn fuzz_corpus_replays() {
    let corpus = include_str!("../fuzz/corpus.jsonl");
    for line in corpus.lines().filter(|line| !line.trim().is_empty()) {
        let input: String = serde_json::from_str(line).expect("a JSON string per line");
        every_parser(&input);
    }
}

proptest! {
    #![proptest_config(herald_testkit::fuzz::config())]

    #[test]
    fn fuzz_engine_packets_parse_or_fail_cleanly(text in protocol_text()) {
        if let Ok(packet) = engine::Packet::decode_text(&text) {
            prop_assert_eq!(packet.encode_text(), Some(text.clone()));
        }
        let _ = engine::decode_payload(&text);
    }

    #[test]
    fn fuzz_polling_payloads_round_trip(
        parts in prop::collection::vec(
            prop_oneof![
                ("[0-6]", "[^\u{1e}]{0,40}").prop_map(|(t, d)| Ok(format!("{t}{d}"))),
                prop::collection::vec(any::<u8>(), 0..40).prop_map(Err),
            ],
            1..6,
        )
    ) {
        let encoded: Vec<engine::Encoded> = parts
            .iter()
            .map(|part| match part {
                Ok(text) => engine::Encoded::Text(text),
                Err(bytes) => engine::Encoded::Binary(bytes),
            })
            .collect();
        let body = engine::encode_payload(encoded);
        let decoded = engine::decode_payload(&body).expect("what we encode parses");
        prop_assert_eq!(decoded.len(), parts.len());
        for (packet, part) in decoded.iter().zip(&parts) {
            match (part, &packet.data) {
                (Ok(text), engine::Data::Text(_)) => {
                    prop_assert_eq!(packet.encode_text(), Some(text.clone()));
                }
                (Err(bytes), engine::Data::Binary(data)) => prop_assert_eq!(&data[..], &bytes[..]),
                _ => prop_assert!(false, "a part changed kind: {:?}", part),
            }
        }
    }

    #[test]
    fn fuzz_socketio_packets_round_trip(text in protocol_text()) {
        if let Ok(packet) = packet::Packet::decode(&text) {
            let again = packet::Packet::decode(&packet.encode());
            prop_assert_eq!(again.as_ref().ok(), Some(&packet));
            if let Ok((name, args)) = packet.event() {
                let _ = reserved::parse(name, args);
            }
        }
    }

    #[test]
    fn fuzz_binary_assembly_never_panics(
        steps in prop::collection::vec(
            prop_oneof![
                protocol_text().prop_map(Ok),
                prop::collection::vec(any::<u8>(), 0..16).prop_map(Err),
            ],
            0..16,
        )
    ) {
        let mut assembler = Assembler::default();
        for step in steps {
            let assembled = match step {
                Ok(text) => match packet::Packet::decode(&text) {
                    Ok(packet) => assembler.packet(packet),
                    Err(_) => continue,
                },
                Err(bytes) => assembler.attachment(Bytes::from(bytes)),
            };
            if let Ok(Some(complete)) = assembled {
                prop_assert_eq!(complete.attachments.len(), complete.packet.attachments);
            }
        }
    }

    #[test]
    fn fuzz_reserved_events_parse_or_refuse(name in protocol_text(), args in protocol_text()) {
        let args: Vec<Box<RawValue>> = serde_json::from_str(&args).unwrap_or_default();
        let args: Vec<&RawValue> = args.iter().map(AsRef::as_ref).collect();
        let _ = reserved::parse(name, args);
    }

    #[test]
    fn fuzz_publication_data_renders_or_becomes_a_message(
        data in protocol_text(),
        attachments in 0usize..4,
    ) {
        let attachments = vec![Bytes::from_static(b"x"); attachments];
        let _ = event::decode(&data, &attachments);
    }

    #[test]
    fn fuzz_native_commands_parse_or_fail_cleanly(text in protocol_text()) {
        let _ = command::parse(&text);
    }

    #[test]
    fn fuzz_native_commands_with_their_shape(
        id in any::<u64>(),
        method in prop_oneof![
            Just("connect"), Just("subscribe"), Just("publish"), Just("history"),
            Just("presence"), Just("refresh"), Just("unsubscribe"), Just("ping"), Just("x"),
        ],
        params in protocol_text(),
    ) {
        let text = format!(r#"{{"id":{id},"method":"{method}","params":{params}}}"#);
        let _ = command::parse(&text);
    }

    #[test]
    fn fuzz_offset_strings_parse_and_round_trip(
        text in protocol_text(),
        marks in prop::collection::vec(("[a-z/:#]{1,12}", "[0-9a-f]{0,8}", any::<u64>()), 0..8),
    ) {
        let _ = offsets::parse(&text);
        let rendered = Marks::default();
        let mut expected = Vec::new();
        for (channel, epoch, offset) in &marks {
            rendered.set(channel, &Position { offset: *offset, epoch: epoch.clone() });
            if epoch.is_empty() {
                continue;
            }
            let mark = (channel.clone(), offsets::key(channel, epoch), *offset);
            match expected.iter_mut().find(|(c, _, _): &&mut (String, u32, u64)| c == channel) {
                Some(kept) => *kept = mark,
                None => expected.push(mark),
            }
        }
        let parsed = offsets::parse(&rendered.render());
        let expected: Vec<(u32, u64)> = expected.iter().map(|(_, k, o)| (*k, *o)).collect();
        prop_assert_eq!(parsed, expected);
    }
}
