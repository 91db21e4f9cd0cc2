use serde_json::{Value, json};

use super::cases::*;
use super::*;

fn message_errors(v: &Value) -> Vec<String> {
    let body = serde_json::to_vec(v).expect("serialize");
    match parse_json::<OutboundMessage>(&body) {
        Err(JsonError::Invalid(p)) => vec![p.name],
        Err(JsonError::Malformed(e)) => panic!("malformed: {e}"),
        Ok(m) => match validate_message(&m) {
            Ok(()) => vec![],
            Err(list) => list.into_iter().map(|p| p.name).collect(),
        },
    }
}

#[test]
fn message_rules() {
    let mut failures = Vec::new();
    for (what, body, expected) in message_cases() {
        let names = message_errors(&body);
        let ok = match expected {
            None => names.is_empty(),
            Some(field) => names.iter().any(|n| n == field),
        };
        if !ok {
            failures.push(format!("{what}: expected {expected:?}, got {names:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn workflow_errors(v: &Value) -> Vec<String> {
    let body = serde_json::to_vec(v).expect("serialize");
    match parse_json::<CreateWorkflow>(&body) {
        Err(JsonError::Invalid(p)) => vec![p.name],
        Err(JsonError::Malformed(e)) => {
            panic!("malformed: {e}: {}", String::from_utf8_lossy(&body))
        }
        Ok(w) => match validate_workflow(&w, &Limits::default()) {
            Ok(()) => vec![],
            Err(list) => list.into_iter().map(|p| p.name).collect(),
        },
    }
}

#[test]
fn workflow_rules() {
    let cases = workflow_cases();
    let mut failures = Vec::new();
    for (what, body, expected) in cases {
        let names = workflow_errors(&body);
        let ok = match expected {
            None => names.is_empty(),
            Some(field) => names.iter().any(|n| n == field),
        };
        if !ok {
            failures.push(format!("{what}: expected {expected:?}, got {names:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_bad_field_is_listed() {
    let body = json!({
        "to": {"type": "sms", "number": "+1"},
        "from": {"type": "sms"},
        "message": {"content": {"type": "text"}},
        "client_ref": "x".repeat(41)
    });
    let mut names = message_errors(&body);
    names.sort();
    assert_eq!(
        names,
        [
            "client_ref",
            "from.number",
            "message.content.text",
            "to.number"
        ]
    );
}

#[test]
fn malformed_json_is_not_a_field_error() {
    for body in [&b"{"[..], b"", b"nope", b"{} trailing"] {
        assert!(
            matches!(
                parse_json::<OutboundMessage>(body),
                Err(JsonError::Malformed(_))
            ),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    assert!(matches!(
        parse_json::<OutboundMessage>(b"[]"),
        Err(JsonError::Invalid(p)) if p.name == "body"
    ));
}

#[test]
fn accepted_requests_round_trip() {
    let body = serde_json::to_vec(&two_steps()).expect("serialize");
    let w: CreateWorkflow = parse_json(&body).expect("parse");
    let again: CreateWorkflow =
        serde_json::from_slice(&serde_json::to_vec(&w).expect("serialize")).expect("parse");
    assert_eq!(w, again);
}
