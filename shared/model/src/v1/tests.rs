//! Every rule of `POST /v1/messages`, one row each: a valid message, the
//! change that breaks it, the error and the field it names.

use serde_json::{Value, json};

use super::{V1Error, V1Message, validate};
use crate::Channel;
use crate::message::ContentType;

fn sms() -> Value {
    json!({"channel": "sms", "message_type": "text", "to": "447700900000",
           "from": "447700900001", "text": "Your code is 64873"})
}

fn base(channel: &str) -> Value {
    match channel {
        "sms" => sms(),
        "mms" => json!({"channel": "mms", "message_type": "image", "to": "14155550100",
                        "from": "12345", "image": {"url": "https://x.example/a.jpg"}}),
        "whatsapp" => json!({"channel": "whatsapp", "message_type": "text", "to": "447700900000",
                             "from": "447700900001", "text": "Hi"}),
        "messenger" => json!({"channel": "messenger", "message_type": "text", "to": "1234567890",
                              "from": "9876543210", "text": "Hi"}),
        "viber_service" => json!({"channel": "viber_service", "message_type": "text",
                                  "to": "447700900000", "from": "mybrand", "text": "Hi"}),
        "rcs" => json!({"channel": "rcs", "message_type": "text", "to": "447700900000",
                        "from": "myagent", "text": "Hi"}),
        other => panic!("{other}"),
    }
}

fn parse(v: &Value) -> V1Message {
    serde_json::from_value(v.clone()).expect("shape")
}

fn check(v: &Value) -> Result<(), (V1Error, Vec<String>)> {
    validate(&parse(v), 10).map_err(|e| (e.error, e.params.into_iter().map(|p| p.name).collect()))
}

fn with(mut v: Value, patch: Value) -> Value {
    for (k, val) in patch.as_object().expect("object") {
        if val.is_null() {
            v.as_object_mut().expect("object").remove(k);
        } else {
            v[k] = val.clone();
        }
    }
    v
}

#[test]
fn every_channel_has_a_valid_message() {
    for c in [
        "sms",
        "mms",
        "whatsapp",
        "messenger",
        "viber_service",
        "rcs",
    ] {
        assert_eq!(check(&base(c)), Ok(()), "{c}");
    }
}

#[test]
fn every_documented_message_type_is_taken() {
    let url = "https://x.example/f";
    let rows = [
        (
            "mms",
            json!({"message_type": "vcard", "vcard": {"url": url}, "image": null}),
        ),
        (
            "mms",
            json!({"message_type": "text", "text": "Hi", "image": null}),
        ),
        (
            "mms",
            json!({"message_type": "content", "content": [{"type": "image", "url": url}], "image": null}),
        ),
        (
            "whatsapp",
            json!({"message_type": "image", "image": {"url": url, "caption": "c"}, "text": null}),
        ),
        (
            "whatsapp",
            json!({"message_type": "template", "template": {"name": "ns:n", "parameters": ["a"]},
                            "whatsapp": {"policy": "deterministic", "locale": "en_GB"}, "text": null}),
        ),
        (
            "whatsapp",
            json!({"message_type": "sticker", "sticker": {"id": "s1"}, "text": null}),
        ),
        (
            "whatsapp",
            json!({"message_type": "reaction", "reaction": {"action": "react", "emoji": "👍"},
                            "context": {"message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"}, "text": null}),
        ),
        (
            "whatsapp",
            json!({"message_type": "custom", "custom": {"type": "location"}, "text": null}),
        ),
        (
            "messenger",
            json!({"message_type": "audio", "audio": {"url": url}, "text": null}),
        ),
        (
            "viber_service",
            json!({"message_type": "video", "video": {"url": url, "thumb_url": url},
                                 "viber_service": {"duration": "12", "file_size": "3"}, "text": null}),
        ),
        (
            "viber_service",
            json!({"message_type": "file", "file": {"url": url, "name": "a.pdf"}, "text": null}),
        ),
        (
            "rcs",
            json!({"message_type": "card", "card": {"title": "t", "media_url": url}, "text": null}),
        ),
        (
            "rcs",
            json!({"message_type": "file", "file": {"url": url}, "text": null}),
        ),
    ];
    for (channel, patch) in rows {
        let v = with(base(channel), patch.clone());
        assert_eq!(check(&v), Ok(()), "{channel} {patch}");
    }
}

#[test]
fn each_rule_names_its_field_and_error() {
    use V1Error as E;
    let rows: Vec<(&str, Value, E, &str)> = vec![
        ("sms", json!({"channel": null}), E::InvalidParams, "channel"),
        (
            "sms",
            json!({"channel": "telegram"}),
            E::UnsupportedChannel,
            "channel",
        ),
        (
            "sms",
            json!({"channel": "viber_service_msg"}),
            E::UnsupportedChannel,
            "channel",
        ),
        (
            "sms",
            json!({"message_type": null}),
            E::InvalidParams,
            "message_type",
        ),
        (
            "sms",
            json!({"message_type": "image"}),
            E::InvalidMessageType,
            "message_type",
        ),
        (
            "messenger",
            json!({"message_type": "template"}),
            E::InvalidMessageType,
            "message_type",
        ),
        ("sms", json!({"to": null}), E::InvalidParams, "to"),
        (
            "sms",
            json!({"to": "+447700900000"}),
            E::InvalidRecipient,
            "to",
        ),
        ("sms", json!({"to": "123456"}), E::InvalidRecipient, "to"),
        (
            "whatsapp",
            json!({"to": "989121234567"}),
            E::InvalidRecipient,
            "to",
        ),
        (
            "messenger",
            json!({"to": "x".repeat(51)}),
            E::InvalidRecipient,
            "to",
        ),
        ("sms", json!({"from": null}), E::InvalidParams, "from"),
        (
            "sms",
            json!({"from": "too-long-sender-id"}),
            E::InvalidSender,
            "from",
        ),
        (
            "whatsapp",
            json!({"from": "mybrand"}),
            E::InvalidSender,
            "from",
        ),
        ("rcs", json!({"from": "agent!"}), E::InvalidSender, "from"),
        ("sms", json!({"text": null}), E::InvalidParams, "text"),
        ("sms", json!({"text": ""}), E::InvalidParams, "text"),
        (
            "sms",
            json!({"text": "x".repeat(1001)}),
            E::InvalidParams,
            "text",
        ),
        (
            "messenger",
            json!({"text": "x".repeat(641)}),
            E::InvalidParams,
            "text",
        ),
        (
            "rcs",
            json!({"text": "x".repeat(3073)}),
            E::InvalidParams,
            "text",
        ),
        ("mms", json!({"image": null}), E::InvalidParams, "image"),
        ("mms", json!({"image": {}}), E::InvalidParams, "image.url"),
        (
            "mms",
            json!({"image": {"url": "ftp://x/a.jpg"}}),
            E::InvalidParams,
            "image.url",
        ),
        (
            "messenger",
            json!({"message_type": "image", "image": {"url": "https://x/a", "caption": "c"}}),
            E::InvalidParams,
            "image.caption",
        ),
        (
            "whatsapp",
            json!({"message_type": "sticker", "sticker": {"url": "https://x/s", "id": "s"}}),
            E::InvalidParams,
            "sticker",
        ),
        (
            "whatsapp",
            json!({"message_type": "template", "template": {"name": "n"}}),
            E::InvalidChannelParams,
            "whatsapp.locale",
        ),
        (
            "whatsapp",
            json!({"message_type": "template", "template": {},
                            "whatsapp": {"locale": "en"}}),
            E::InvalidParams,
            "template.name",
        ),
        (
            "whatsapp",
            json!({"whatsapp": {"policy": "fallback"}}),
            E::InvalidChannelParams,
            "whatsapp.policy",
        ),
        (
            "whatsapp",
            json!({"message_type": "reaction", "reaction": {"action": "react", "emoji": "x"}}),
            E::InvalidParams,
            "context.message_uuid",
        ),
        (
            "whatsapp",
            json!({"context": {"message_uuid": "nope"}}),
            E::InvalidParams,
            "context.message_uuid",
        ),
        (
            "sms",
            json!({"context": {"message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"}}),
            E::InvalidParams,
            "context",
        ),
        (
            "mms",
            json!({"message_type": "content", "content": []}),
            E::InvalidParams,
            "content",
        ),
        (
            "sms",
            json!({"client_ref": "x".repeat(101)}),
            E::InvalidClientRef,
            "client_ref",
        ),
        (
            "sms",
            json!({"webhook_url": "not a url"}),
            E::InvalidParams,
            "webhook_url",
        ),
        (
            "sms",
            json!({"webhook_version": "v2"}),
            E::InvalidParams,
            "webhook_version",
        ),
        ("sms", json!({"ttl": 10}), E::InvalidParams, "ttl"),
        ("mms", json!({"ttl": 299}), E::InvalidParams, "ttl"),
        ("whatsapp", json!({"ttl": 600}), E::InvalidParams, "ttl"),
        (
            "sms",
            json!({"sms": {"encoding_type": "binary"}}),
            E::InvalidChannelParams,
            "sms.encoding_type",
        ),
        (
            "sms",
            json!({"sms": {"content_id": " "}}),
            E::InvalidChannelParams,
            "sms.content_id",
        ),
        (
            "whatsapp",
            json!({"sms": {}}),
            E::InvalidChannelParams,
            "sms",
        ),
        (
            "messenger",
            json!({"messenger": {"category": "promo"}}),
            E::InvalidChannelParams,
            "messenger.category",
        ),
        (
            "messenger",
            json!({"messenger": {"category": "message_tag"}}),
            E::InvalidChannelParams,
            "messenger.tag",
        ),
        (
            "viber_service",
            json!({"viber_service": {"ttl": 29}}),
            E::InvalidChannelParams,
            "viber_service.ttl",
        ),
        (
            "viber_service",
            json!({"viber_service": {"category": "x"}}),
            E::InvalidChannelParams,
            "viber_service.category",
        ),
        (
            "viber_service",
            json!({"viber_service": {"action": {"url": "https://x/"}}}),
            E::InvalidChannelParams,
            "viber_service.action",
        ),
        (
            "viber_service",
            json!({"viber_service": {"action": {"url": "https://x/", "text": "x".repeat(31)}}}),
            E::InvalidChannelParams,
            "viber_service.action.text",
        ),
        (
            "viber_service",
            json!({"message_type": "video", "video": {"url": "https://x/v.mp4"},
                                 "viber_service": {"duration": "5", "file_size": "1"}}),
            E::InvalidParams,
            "video.thumb_url",
        ),
        (
            "viber_service",
            json!({"message_type": "video", "video": {"url": "https://x/v", "thumb_url": "https://x/t"},
                                 "viber_service": {"duration": "601", "file_size": "1"}}),
            E::InvalidChannelParams,
            "viber_service.duration",
        ),
        (
            "rcs",
            json!({"rcs": {"category": "spam"}}),
            E::InvalidChannelParams,
            "rcs.category",
        ),
        (
            "mms",
            json!({"image": {"url": "https://x/a.jpg", "caption": "c".repeat(2001)}}),
            E::InvalidParams,
            "image.caption",
        ),
        (
            "messenger",
            json!({"message_type": "audio", "audio": {"url": "http://x/"}}),
            E::InvalidParams,
            "audio.url",
        ),
        (
            "viber_service",
            json!({"viber_service": {"type": "video"}}),
            E::InvalidChannelParams,
            "viber_service.type",
        ),
        (
            "viber_service",
            json!({"message_type": "file", "file": {"url": "https://x/f.pdf"},
                                 "viber_service": {"action": {"url": "https://x/", "text": "Go"}}}),
            E::InvalidChannelParams,
            "viber_service.action",
        ),
        (
            "rcs",
            json!({"message_type": "carousel", "carousel": {"cards": [{}]}}),
            E::InvalidParams,
            "carousel.cards",
        ),
    ];
    for (channel, patch, error, field) in rows {
        let v = with(base(channel), patch.clone());
        match check(&v) {
            Ok(()) => panic!("{channel} {patch}: accepted"),
            Err((e, names)) => {
                assert_eq!(e, error, "{channel} {patch}: {names:?}");
                assert!(
                    names.iter().any(|n| n == field),
                    "{channel} {patch}: {names:?}"
                );
            }
        }
    }
}

#[test]
fn a_chain_is_checked_message_by_message() {
    let condition = json!({"condition_status": "read", "expiry_time": 600});
    let ok = with(
        base("whatsapp"),
        json!({"failover_condition": condition, "failover": [sms()]}),
    );
    assert_eq!(check(&ok), Ok(()));
    let rows: Vec<(Value, &str)> = vec![
        (with(base("sms"), json!({"failover": []})), "failover"),
        (
            with(
                base("sms"),
                json!({"failover": [with(sms(), json!({"text": null}))]}),
            ),
            "failover[0].text",
        ),
        (
            with(
                base("sms"),
                json!({"failover": [with(sms(), json!({"failover": [sms()]}))]}),
            ),
            "failover[0].failover",
        ),
        // The last message of a chain, and a lone message, have no condition.
        (
            with(
                base("sms"),
                json!({"failover_condition": {"condition_status": "delivered", "expiry_time": 60}}),
            ),
            "failover_condition",
        ),
        (
            with(
                base("whatsapp"),
                json!({"failover": [with(sms(), json!({"failover_condition": condition}))]}),
            ),
            "failover[0].failover_condition",
        ),
        (
            with(
                base("whatsapp"),
                json!({"failover_condition": {"condition_status": "read", "expiry_time": 14},
                                       "failover": [sms()]}),
            ),
            "failover_condition.expiry_time",
        ),
        (
            with(
                base("whatsapp"),
                json!({"failover_condition": {"condition_status": "seen", "expiry_time": 60},
                                       "failover": [sms()]}),
            ),
            "failover_condition.condition_status",
        ),
        (
            with(
                base("sms"),
                json!({"failover_condition": {"condition_status": "read", "expiry_time": 60},
                                  "failover": [sms()]}),
            ),
            "failover_condition.condition_status",
        ),
        (
            with(base("sms"), json!({"failover": vec![sms(); 10]})),
            "failover",
        ),
    ];
    for (v, field) in rows {
        let (_, names) = check(&v).expect_err(field);
        assert!(names.iter().any(|n| n == field), "{field}: {names:?}");
    }
}

#[test]
fn the_mapping_keeps_channel_addresses_content_and_condition() {
    let v = with(
        base("viber_service"),
        json!({"failover_condition": {"condition_status": "read", "expiry_time": 30},
               "client_ref": "r1", "failover": [sms()]}),
    );
    let m = parse(&v).to_outbound();
    assert_eq!(m.channel(), Some(Channel::ViberServiceMsg));
    assert_eq!(
        m.to.as_ref().and_then(|a| a.number.as_deref()),
        Some("447700900000")
    );
    assert_eq!(
        m.from.as_ref().and_then(|a| a.id.as_deref()),
        Some("mybrand")
    );
    let content = m
        .message
        .as_ref()
        .and_then(|b| b.content.as_ref())
        .expect("content");
    assert_eq!(content.kind, Some(ContentType::Text));
    assert_eq!(content.text.as_deref(), Some("Hi"));
    assert_eq!(m.client_ref.as_deref(), Some("r1"));
    let f = m.failover.as_ref().expect("condition");
    assert_eq!(f.expiry_time, Some(30));
    let original = m.v1.as_ref().expect("original");
    assert!(
        original.failover.is_none(),
        "the chain is not repeated in each step"
    );
    assert_eq!(original.channel.as_deref(), Some("viber_service"));

    let sticker = with(
        base("whatsapp"),
        json!({"message_type": "sticker", "sticker": {"id": "s1"}}),
    );
    let content = parse(&sticker)
        .to_outbound()
        .message
        .and_then(|b| b.content)
        .expect("content");
    assert_eq!(content.kind, Some(ContentType::Custom));
    assert_eq!(
        serde_json::to_value(content.custom).expect("json"),
        json!({"message_type": "sticker", "sticker": {"id": "s1"}})
    );
}
