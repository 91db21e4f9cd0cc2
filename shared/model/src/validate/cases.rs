//! The validation rules as a table: a valid request, one change, and the
//! field that must be named in `invalid_parameters` (`None`: still valid).
//!
//! Shared by the model's unit tests and the HTTP integration tests (which
//! include this file by path), so every rule is checked at both levels.

#![allow(dead_code)]

use serde_json::{Value, json};

pub fn sms() -> Value {
    json!({
        "to": {"type": "sms", "number": "447700900000"},
        "from": {"type": "sms", "number": "447700900001"},
        "message": {"content": {"type": "text", "text": "Hello"}},
        "client_ref": "ref-1"
    })
}

pub fn whatsapp() -> Value {
    json!({
        "to": {"type": "whatsapp", "number": "447700900000"},
        "from": {"type": "whatsapp", "number": "447700900001"},
        "message": {"content": {"type": "text", "text": "Hello"}}
    })
}

pub fn messenger() -> Value {
    json!({
        "to": {"type": "messenger", "id": "0123456789012345"},
        "from": {"type": "messenger", "id": "9876543210"},
        "message": {"content": {"type": "text", "text": "Hello"}}
    })
}

pub fn viber() -> Value {
    json!({
        "to": {"type": "viber_service_msg", "number": "447700900000"},
        "from": {"type": "viber_service_msg", "id": "MyBrand"},
        "message": {"content": {"type": "text", "text": "Hello"}}
    })
}

pub fn mms() -> Value {
    json!({
        "to": {"type": "mms", "number": "14155550100"},
        "from": {"type": "mms", "number": "12345"},
        "message": {"content": {"type": "image", "image": {"url": "https://example.com/a.jpg"}}}
    })
}

pub fn set(mut v: Value, pointer: &str, new: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a slash");
    let target = v.pointer_mut(parent).expect("parent exists");
    match target {
        Value::Object(map) => {
            if new.is_null() {
                map.remove(key);
            } else {
                map.insert(key.to_owned(), new);
            }
        }
        Value::Array(items) => {
            let i: usize = key.parse().expect("index");
            items[i] = new;
        }
        _ => panic!("cannot set {pointer}"),
    }
    v
}

pub fn text(n: usize) -> Value {
    Value::String("é".repeat(n))
}

/// (description, request, field that must be reported, or None if valid)
pub fn message_cases() -> Vec<(&'static str, Value, Option<&'static str>)> {
    let long_url = format!("https://example.com/{}.jpg", "a".repeat(2000));
    vec![
        ("valid sms", sms(), None),
        ("valid whatsapp", whatsapp(), None),
        ("valid messenger", messenger(), None),
        ("valid viber", viber(), None),
        ("valid mms", mms(), None),
        // channels and address types
        ("missing to", set(sms(), "/to", Value::Null), Some("to")),
        (
            "missing from",
            set(sms(), "/from", Value::Null),
            Some("from"),
        ),
        (
            "missing message",
            set(sms(), "/message", Value::Null),
            Some("message"),
        ),
        (
            "missing to.type",
            set(sms(), "/to/type", Value::Null),
            Some("to.type"),
        ),
        (
            "unknown channel",
            set(sms(), "/to/type", json!("fax")),
            Some("to.type"),
        ),
        (
            "to and from differ",
            set(sms(), "/from/type", json!("whatsapp")),
            Some("from.type"),
        ),
        (
            "whatsapp to Cuba",
            set(whatsapp(), "/to/number", json!("5352123456")),
            Some("to.number"),
        ),
        (
            "whatsapp to Iran",
            set(whatsapp(), "/to/number", json!("989121234567")),
            Some("to.number"),
        ),
        (
            "whatsapp to North Korea",
            set(whatsapp(), "/to/number", json!("85021234567")),
            Some("to.number"),
        ),
        (
            "whatsapp to Syria",
            set(whatsapp(), "/to/number", json!("963912345678")),
            Some("to.number"),
        ),
        (
            "whatsapp to Crimea (Russian numbering)",
            set(whatsapp(), "/to/number", json!("79781234567")),
            Some("to.number"),
        ),
        (
            "whatsapp to Crimea (Ukrainian numbering)",
            set(whatsapp(), "/to/number", json!("380652123456")),
            Some("to.number"),
        ),
        (
            "whatsapp from Syria",
            set(whatsapp(), "/from/number", json!("963912345678")),
            Some("from.number"),
        ),
        (
            "sms to Cuba is allowed",
            set(sms(), "/to/number", json!("5352123456")),
            None,
        ),
        (
            "whatsapp to Kyiv is allowed",
            set(whatsapp(), "/to/number", json!("380441234567")),
            None,
        ),
        (
            "whatsapp to Moscow is allowed",
            set(whatsapp(), "/to/number", json!("74951234567")),
            None,
        ),
        (
            "sms needs to.number",
            set(sms(), "/to/number", Value::Null),
            Some("to.number"),
        ),
        (
            "messenger needs to.id",
            set(messenger(), "/to/id", Value::Null),
            Some("to.id"),
        ),
        (
            "messenger id too long",
            set(messenger(), "/to/id", json!("1".repeat(51))),
            Some("to.id"),
        ),
        (
            "viber needs from.id",
            set(viber(), "/from/id", Value::Null),
            Some("from.id"),
        ),
        (
            "mms from short code",
            set(mms(), "/from/number", json!("12")),
            Some("from.number"),
        ),
        // E.164
        (
            "plus sign",
            set(sms(), "/to/number", json!("+447700900000")),
            Some("to.number"),
        ),
        (
            "double zero",
            set(sms(), "/to/number", json!("00447700900000")),
            Some("to.number"),
        ),
        (
            "letters",
            set(sms(), "/to/number", json!("4477009abc")),
            Some("to.number"),
        ),
        (
            "too long",
            set(sms(), "/to/number", json!("1234567890123456")),
            Some("to.number"),
        ),
        (
            "too short",
            set(sms(), "/from/number", json!("123456")),
            Some("from.number"),
        ),
        (
            "number wrong type",
            set(sms(), "/to/number", json!(447700900000_u64)),
            Some("to.number"),
        ),
        // content types per channel
        (
            "sms image",
            set(
                sms(),
                "/message/content",
                json!({"type": "image", "image": {"url": "https://e.com/a.jpg"}}),
            ),
            Some("message.content.type"),
        ),
        (
            "mms text",
            set(
                mms(),
                "/message/content",
                json!({"type": "text", "text": "hi"}),
            ),
            Some("message.content.type"),
        ),
        (
            "messenger template",
            set(
                messenger(),
                "/message/content",
                json!({"type": "template", "template": {"name": "a:b"}}),
            ),
            Some("message.content.type"),
        ),
        (
            "viber audio",
            set(
                viber(),
                "/message/content",
                json!({"type": "audio", "audio": {"url": "https://e.com/a.mp3"}}),
            ),
            Some("message.content.type"),
        ),
        (
            "whatsapp custom",
            set(
                whatsapp(),
                "/message/content",
                json!({"type": "custom", "custom": {}}),
            ),
            Some("message.content.type"),
        ),
        (
            "viber custom",
            set(
                viber(),
                "/message/content",
                json!({"type": "custom", "custom": {"x": 1}}),
            ),
            None,
        ),
        (
            "messenger custom",
            set(
                messenger(),
                "/message/content",
                json!({"type": "custom", "custom": {"attachment": {}}}),
            ),
            None,
        ),
        (
            "custom needs object",
            set(viber(), "/message/content", json!({"type": "custom"})),
            Some("message.content.custom"),
        ),
        (
            "unknown content type",
            set(sms(), "/message/content/type", json!("sticker")),
            Some("message.content.type"),
        ),
        (
            "missing content",
            set(sms(), "/message/content", Value::Null),
            Some("message.content"),
        ),
        (
            "missing content.type",
            set(sms(), "/message/content/type", Value::Null),
            Some("message.content.type"),
        ),
        // text limits
        (
            "text missing",
            set(sms(), "/message/content/text", Value::Null),
            Some("message.content.text"),
        ),
        (
            "text empty",
            set(sms(), "/message/content/text", json!("")),
            Some("message.content.text"),
        ),
        (
            "sms 1000",
            set(sms(), "/message/content/text", text(1000)),
            None,
        ),
        (
            "sms 1001",
            set(sms(), "/message/content/text", text(1001)),
            Some("message.content.text"),
        ),
        (
            "viber 1000",
            set(viber(), "/message/content/text", text(1000)),
            None,
        ),
        (
            "viber 1001",
            set(viber(), "/message/content/text", text(1001)),
            Some("message.content.text"),
        ),
        (
            "messenger 640",
            set(messenger(), "/message/content/text", text(640)),
            None,
        ),
        (
            "messenger 641",
            set(messenger(), "/message/content/text", text(641)),
            Some("message.content.text"),
        ),
        (
            "whatsapp 4096",
            set(whatsapp(), "/message/content/text", text(4096)),
            None,
        ),
        (
            "whatsapp 4097",
            set(whatsapp(), "/message/content/text", text(4097)),
            Some("message.content.text"),
        ),
        (
            "text wrong type",
            set(sms(), "/message/content/text", json!(5)),
            Some("message.content.text"),
        ),
        // media
        (
            "image without object",
            set(mms(), "/message/content/image", Value::Null),
            Some("message.content.image"),
        ),
        (
            "image without url",
            set(mms(), "/message/content/image", json!({})),
            Some("message.content.image.url"),
        ),
        (
            "image url not http",
            set(
                mms(),
                "/message/content/image/url",
                json!("ftp://example.com/a.jpg"),
            ),
            Some("message.content.image.url"),
        ),
        (
            "image url relative",
            set(mms(), "/message/content/image/url", json!("/images/a.jpg")),
            Some("message.content.image.url"),
        ),
        (
            "image url too long",
            set(mms(), "/message/content/image/url", json!(long_url)),
            Some("message.content.image.url"),
        ),
        (
            "mms gif",
            set(
                mms(),
                "/message/content/image/url",
                json!("https://e.com/a.GIF?x=1"),
            ),
            None,
        ),
        (
            "mms bmp",
            set(
                mms(),
                "/message/content/image/url",
                json!("https://e.com/a.bmp"),
            ),
            Some("message.content.image.url"),
        ),
        (
            "whatsapp gif",
            set(
                whatsapp(),
                "/message/content",
                json!({"type": "image", "image": {"url": "https://e.com/a.gif"}}),
            ),
            Some("message.content.image.url"),
        ),
        (
            "viber png",
            set(
                viber(),
                "/message/content",
                json!({"type": "image", "image": {"url": "https://e.com/a.png"}}),
            ),
            None,
        ),
        (
            "whatsapp opus",
            set(
                whatsapp(),
                "/message/content",
                json!({"type": "audio", "audio": {"url": "https://e.com/a.opus"}}),
            ),
            None,
        ),
        (
            "messenger opus",
            set(
                messenger(),
                "/message/content",
                json!({"type": "audio", "audio": {"url": "https://e.com/a.opus"}}),
            ),
            Some("message.content.audio.url"),
        ),
        (
            "whatsapp 3gpp",
            set(
                whatsapp(),
                "/message/content",
                json!({"type": "video", "video": {"url": "https://e.com/a.3gpp"}}),
            ),
            None,
        ),
        (
            "messenger 3gpp",
            set(
                messenger(),
                "/message/content",
                json!({"type": "video", "video": {"url": "https://e.com/a.3gpp"}}),
            ),
            Some("message.content.video.url"),
        ),
        (
            "whatsapp docx",
            set(
                whatsapp(),
                "/message/content",
                json!({"type": "file", "file": {"url": "https://e.com/a.docx"}}),
            ),
            None,
        ),
        (
            "whatsapp zip",
            set(
                whatsapp(),
                "/message/content",
                json!({"type": "file", "file": {"url": "https://e.com/a.zip"}}),
            ),
            Some("message.content.file.url"),
        ),
        (
            "messenger zip",
            set(
                messenger(),
                "/message/content",
                json!({"type": "file", "file": {"url": "https://e.com/a.zip"}}),
            ),
            None,
        ),
        (
            "caption too long",
            set(mms(), "/message/content/image/caption", text(3001)),
            Some("message.content.image.caption"),
        ),
        (
            "caption empty",
            set(mms(), "/message/content/image/caption", json!("")),
            Some("message.content.image.caption"),
        ),
        // templates
        (
            "whatsapp template",
            set(
                whatsapp(),
                "/message/content",
                json!({"type": "template", "template": {"name": "ns:verify", "parameters": [{"default": "1"}]}}),
            ),
            None,
        ),
        (
            "template without name",
            set(
                whatsapp(),
                "/message/content",
                json!({"type": "template", "template": {}}),
            ),
            Some("message.content.template.name"),
        ),
        (
            "template without namespace",
            set(
                whatsapp(),
                "/message/content",
                json!({"type": "template", "template": {"name": "verify"}}),
            ),
            Some("message.content.template.name"),
        ),
        (
            "template without object",
            set(whatsapp(), "/message/content", json!({"type": "template"})),
            Some("message.content.template"),
        ),
        (
            "template parameter without default",
            set(
                whatsapp(),
                "/message/content",
                json!({"type": "template", "template": {"name": "a:b", "parameters": [{}]}}),
            ),
            Some("message.content.template.parameters[0].default"),
        ),
        (
            "template parameter not string",
            set(
                whatsapp(),
                "/message/content",
                json!({"type": "template", "template": {"name": "a:b", "parameters": [{"default": 1}]}}),
            ),
            Some("message.content.template.parameters[0].default"),
        ),
        (
            "template parameters not array",
            set(
                whatsapp(),
                "/message/content",
                json!({"type": "template", "template": {"name": "a:b", "parameters": "x"}}),
            ),
            Some("message.content.template.parameters"),
        ),
        // viber options
        (
            "viber category",
            set(
                viber(),
                "/message/viber_service_msg",
                json!({"category": "promotion", "ttl": 600}),
            ),
            None,
        ),
        (
            "viber bad category",
            set(
                viber(),
                "/message/viber_service_msg",
                json!({"category": "spam"}),
            ),
            Some("message.viber_service_msg.category"),
        ),
        (
            "viber ttl 29",
            set(viber(), "/message/viber_service_msg", json!({"ttl": 29})),
            Some("message.viber_service_msg.ttl"),
        ),
        (
            "viber ttl 259200",
            set(
                viber(),
                "/message/viber_service_msg",
                json!({"ttl": 259_200}),
            ),
            None,
        ),
        (
            "viber ttl 259201",
            set(
                viber(),
                "/message/viber_service_msg",
                json!({"ttl": 259_201}),
            ),
            Some("message.viber_service_msg.ttl"),
        ),
        (
            "viber ttl float",
            set(viber(), "/message/viber_service_msg", json!({"ttl": 60.5})),
            Some("message.viber_service_msg.ttl"),
        ),
        // messenger options
        (
            "messenger update",
            set(
                messenger(),
                "/message/messenger",
                json!({"category": "update"}),
            ),
            None,
        ),
        (
            "messenger bad category",
            set(
                messenger(),
                "/message/messenger",
                json!({"category": "promo"}),
            ),
            Some("message.messenger.category"),
        ),
        (
            "message_tag needs tag",
            set(
                messenger(),
                "/message/messenger",
                json!({"category": "message_tag"}),
            ),
            Some("message.messenger.tag"),
        ),
        (
            "message_tag with tag",
            set(
                messenger(),
                "/message/messenger",
                json!({"category": "message_tag", "tag": "ticket_update"}),
            ),
            None,
        ),
        // whatsapp options
        (
            "whatsapp policy",
            set(
                whatsapp(),
                "/message/whatsapp",
                json!({"policy": "deterministic", "locale": "en-GB"}),
            ),
            None,
        ),
        (
            "whatsapp bad policy",
            set(whatsapp(), "/message/whatsapp", json!({"policy": "random"})),
            Some("message.whatsapp.policy"),
        ),
        (
            "whatsapp bad locale",
            set(whatsapp(), "/message/whatsapp", json!({"locale": "en_GB"})),
            Some("message.whatsapp.locale"),
        ),
        (
            "whatsapp bad locale 2",
            set(whatsapp(), "/message/whatsapp", json!({"locale": "e"})),
            Some("message.whatsapp.locale"),
        ),
        // client_ref
        (
            "client_ref 40",
            set(sms(), "/client_ref", json!("x".repeat(40))),
            None,
        ),
        (
            "client_ref 41",
            set(sms(), "/client_ref", json!("x".repeat(41))),
            Some("client_ref"),
        ),
        (
            "client_ref wrong type",
            set(sms(), "/client_ref", json!(["a"])),
            Some("client_ref"),
        ),
        // unknown fields are ignored
        (
            "unknown field",
            set(sms(), "/extra", json!({"anything": true})),
            None,
        ),
    ]
}

pub fn step(mut m: Value, failover: Option<Value>) -> Value {
    if let Some(f) = failover {
        m["failover"] = f;
    }
    m
}

pub fn workflow(steps: Vec<Value>) -> Value {
    json!({"template": "failover", "workflow": steps})
}

pub fn two_steps() -> Value {
    workflow(vec![
        step(
            whatsapp(),
            Some(json!({"expiry_time": 600, "condition_status": "read"})),
        ),
        step(sms(), None),
    ])
}

/// (description, request, field that must be reported, or None if valid)
pub fn workflow_cases() -> Vec<(&'static str, Value, Option<&'static str>)> {
    let fo = |t: Value, c: Value| Some(json!({"expiry_time": t, "condition_status": c}));
    vec![
        ("valid", two_steps(), None),
        ("single step", workflow(vec![step(sms(), None)]), None),
        (
            "template missing",
            set(two_steps(), "/template", Value::Null),
            Some("template"),
        ),
        (
            "template other",
            set(two_steps(), "/template", json!("broadcast")),
            Some("template"),
        ),
        (
            "template wrong type",
            set(two_steps(), "/template", json!(1)),
            Some("template"),
        ),
        (
            "workflow missing",
            set(two_steps(), "/workflow", Value::Null),
            Some("workflow"),
        ),
        ("workflow empty", workflow(vec![]), Some("workflow")),
        (
            "workflow not array",
            set(two_steps(), "/workflow", json!({})),
            Some("workflow"),
        ),
        (
            "too many steps",
            workflow(
                (0..11)
                    .map(|i| {
                        step(
                            sms(),
                            (i < 10).then(
                                || json!({"expiry_time": 60, "condition_status": "delivered"}),
                            ),
                        )
                    })
                    .collect(),
            ),
            Some("workflow"),
        ),
        (
            "first without failover",
            workflow(vec![step(whatsapp(), None), step(sms(), None)]),
            Some("workflow[0].failover"),
        ),
        (
            "last with failover",
            workflow(vec![
                step(whatsapp(), fo(json!(60), json!("read"))),
                step(sms(), fo(json!(60), json!("delivered"))),
            ]),
            Some("workflow[1].failover"),
        ),
        (
            "expiry 14",
            workflow(vec![
                step(whatsapp(), fo(json!(14), json!("read"))),
                step(sms(), None),
            ]),
            Some("workflow[0].failover.expiry_time"),
        ),
        (
            "expiry 15",
            workflow(vec![
                step(whatsapp(), fo(json!(15), json!("read"))),
                step(sms(), None),
            ]),
            None,
        ),
        (
            "expiry 86400",
            workflow(vec![
                step(whatsapp(), fo(json!(86400), json!("read"))),
                step(sms(), None),
            ]),
            None,
        ),
        (
            "expiry 86401",
            workflow(vec![
                step(whatsapp(), fo(json!(86401), json!("read"))),
                step(sms(), None),
            ]),
            Some("workflow[0].failover.expiry_time"),
        ),
        (
            "expiry missing",
            workflow(vec![
                step(whatsapp(), Some(json!({"condition_status": "read"}))),
                step(sms(), None),
            ]),
            Some("workflow[0].failover.expiry_time"),
        ),
        (
            "expiry string",
            workflow(vec![
                step(whatsapp(), fo(json!("60"), json!("read"))),
                step(sms(), None),
            ]),
            Some("workflow[0].failover.expiry_time"),
        ),
        (
            "condition missing",
            workflow(vec![
                step(whatsapp(), Some(json!({"expiry_time": 60}))),
                step(sms(), None),
            ]),
            Some("workflow[0].failover.condition_status"),
        ),
        (
            "condition other",
            workflow(vec![
                step(whatsapp(), fo(json!(60), json!("submitted"))),
                step(sms(), None),
            ]),
            Some("workflow[0].failover.condition_status"),
        ),
        (
            "read on sms",
            workflow(vec![
                step(sms(), fo(json!(60), json!("read"))),
                step(whatsapp(), None),
            ]),
            Some("workflow[0].failover.condition_status"),
        ),
        (
            "read on mms",
            workflow(vec![
                step(mms(), fo(json!(60), json!("read"))),
                step(sms(), None),
            ]),
            Some("workflow[0].failover.condition_status"),
        ),
        (
            "read on messenger",
            workflow(vec![
                step(messenger(), fo(json!(60), json!("read"))),
                step(sms(), None),
            ]),
            None,
        ),
        (
            "read on viber",
            workflow(vec![
                step(viber(), fo(json!(60), json!("read"))),
                step(sms(), None),
            ]),
            None,
        ),
        (
            "delivered on sms",
            workflow(vec![
                step(sms(), fo(json!(60), json!("delivered"))),
                step(viber(), None),
            ]),
            None,
        ),
        (
            "step rules apply",
            workflow(vec![
                step(
                    set(sms(), "/to/number", json!("+44")),
                    fo(json!(60), json!("delivered")),
                ),
                step(sms(), None),
            ]),
            Some("workflow[0].to.number"),
        ),
        (
            "dispatch viber ttl 86401",
            workflow(vec![step(
                set(
                    viber(),
                    "/message/viber_service_msg",
                    json!({"ttl": 86_401}),
                ),
                None,
            )]),
            Some("workflow[0].message.viber_service_msg.ttl"),
        ),
        (
            "dispatch viber ttl 86400",
            workflow(vec![step(
                set(
                    viber(),
                    "/message/viber_service_msg",
                    json!({"ttl": 86_400}),
                ),
                None,
            )]),
            None,
        ),
        (
            "step type error",
            set(two_steps(), "/workflow/1/to/type", json!(3)),
            Some("workflow[1].to.type"),
        ),
    ]
}
