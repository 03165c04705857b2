use super::*;
use proptest::prelude::*;

/// Every type, and a name given twice (the first field wins).
fn schema() -> Arc<Schema> {
    Arc::new(Schema::new([
        ("id", Type::Int),
        ("user", Type::String),
        ("page", Type::String),
        ("amount", Type::Int),
        ("ts", Type::Int),
        ("x", Type::Double),
        ("b", Type::Bool),
        ("a", Type::Any),
        ("", Type::Int),
        ("été", Type::String),
        ("id", Type::String),
    ]))
}

/// The pure serde path, as records were decoded before the scanner. Rows are compared by
/// their debug text, which tells -0.0 from 0.0.
fn reference(schema: &Schema, mask: Option<&[bool]>, text: &str) -> Result<String, String> {
    let mut row = vec![Value::Null; schema.len()];
    let mut de = serde_json::Deserializer::from_str(text);
    RowSeed {
        schema,
        row: &mut row,
        mask,
    }
    .deserialize(&mut de)
    .and_then(|_| de.end())
    .map_err(|e| e.to_string())?;
    Ok(format!("{row:?}"))
}

fn decoded(d: &RowDecoder, row: &mut Vec<Value>, text: &str) -> Result<String, String> {
    d.decode(text, row).map_err(|e| e.to_string())?;
    Ok(format!("{row:?}"))
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "id",
        "user",
        "page",
        "amount",
        "ts",
        "x",
        "b",
        "a",
        "",
        "été",
        "zz",
        "us",
        "usex",
        "Id",
        "u\\u0073er",
        "a\\\"b",
        "\u{1}",
    ])
    .prop_map(|k| format!("\"{k}\""))
}

fn string() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "a",
        "u42",
        "/p/7",
        " ",
        "é",
        "日本",
        "😀",
        "\\n",
        "\\\"",
        "\\\\",
        "\\/",
        "\\u00e9",
        "\\ud83d\\ude00",
        "\\ud800",
        "\\x",
        "\u{1}",
        "\t",
        "\u{7f}",
    ]);
    prop::collection::vec(piece, 0..12).prop_map(|p| format!("\"{}\"", p.concat()))
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => (0i64..1000).prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
        1 => "-?[0-9]{1,25}",
        1 => "-?[0-9]{1,3}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{0,3})?",
        // The edges, where serde turns to doubles or errors.
        6 => prop::sample::select(vec![
            "0",
            "-0",
            "-",
            "01",
            "-01",
            "00",
            "1.",
            ".5",
            "1e400",
            "-1e400",
            "999999999999999999",
            "-999999999999999999",
            "1000000000000000000",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
        ])
        .prop_map(String::from),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        // Mostly values the scanner takes, so that one odd value in an otherwise plain record
        // is common.
        3 => (-1000i64..1000).prop_map(|n| n.to_string()),
        3 => "[a-z0-9/é]{0,8}".prop_map(|s| format!("\"{s}\"")),
        2 => prop::sample::select(vec!["true", "false", "null"]).prop_map(String::from),
        2 => string(),
        3 => number(),
        1 => prop::sample::select(vec![
            "true", "false", "null", "tru", "nul", "falsey", "True", "[]", "{}", "[1, \"a\"]",
            "{\"a\": {\"b\": [null]}}", "[", "{\"a\"}", "'a'", "",
        ])
        .prop_map(String::from),
    ]
}

fn ws() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        8 => Just(""),
        1 => prop::sample::select(vec![" ", "  ", "\t", "\n", "\r\n", "\u{a0}", "\u{b}"]),
    ]
}

/// Mostly well-formed objects, with now and then a broken join or ending.
fn object() -> impl Strategy<Value = String> {
    let entry = (ws(), key(), ws(), ws(), value(), ws())
        .prop_map(|(w1, k, w2, w3, v, w4)| format!("{w1}{k}{w2}:{w3}{v}{w4}"));
    // Rarely broken, so most records get to their values.
    let odd = |usual: &'static str, odd: Vec<&'static str>| prop_oneof![30 => Just(usual), 1 => prop::sample::select(odd)];
    let sep = odd(",", vec![", ", "", ",,", ";"]);
    let open = odd("{", vec![" {", "[", "\"x\"", ""]);
    let close = odd("}", vec![",}", "", "]", "}}"]);
    let trailer = odd("", vec![" ", "\n", "x", ",", "}", "{}", "\u{0}"]);
    (
        open,
        prop::collection::vec((entry, sep), 0..9),
        close,
        trailer,
    )
        .prop_map(|(open, entries, close, trailer)| {
            let mut s = open.to_string();
            let last = entries.len().saturating_sub(1);
            for (i, (e, sep)) in entries.iter().enumerate() {
                s.push_str(e);
                if i < last {
                    s.push_str(sep);
                }
            }
            s.push_str(close);
            s.push_str(trailer);
            s
        })
}

/// Objects of the common shape: flat, projected keys and unknown ones, no escapes, values
/// of the fields' types.
fn flat_object() -> impl Strategy<Value = String> {
    let int = prop_oneof![
        (-(1i64 << 50)..(1i64 << 50)).prop_map(|n| n.to_string()),
        Just("null".to_string()),
    ];
    let string = "[a-z0-9/é ]{0,30}".prop_map(|s| format!("\"{s}\""));
    let boolean = prop::sample::select(vec!["true", "false", "null"]).prop_map(String::from);
    let any = prop_oneof![int.clone(), string.clone(), boolean.clone()];
    let entry = prop_oneof![
        int.prop_map(|v| ("id", v)),
        string.clone().prop_map(|v| ("user", v)),
        string.prop_map(|v| ("page", v)),
        (0i64..1_000_000).prop_map(|v| ("amount", v.to_string())),
        (0i64..i64::MAX / 10).prop_map(|v| ("ts", v.to_string())),
        boolean.prop_map(|v| ("b", v)),
        any.clone().prop_map(|v| ("a", v)),
        any.prop_map(|v| ("zz", v)),
    ];
    prop::collection::vec(entry, 0..8).prop_map(|kv| {
        let body: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    })
}

fn mask() -> impl Strategy<Value = Option<Vec<bool>>> {
    prop::option::of(prop::collection::vec(any::<bool>(), 11))
}

fn same_as_serde(text: &str, mask: Option<Vec<bool>>) -> Result<(), TestCaseError> {
    let schema = schema();
    let d = RowDecoder::new(schema.clone(), mask.clone().map(Arc::from));
    let want = reference(&schema, mask.as_deref(), text);
    // A row left from an earlier record must not leak into the next one.
    let mut row = vec![Value::from("stale"); schema.len()];
    prop_assert_eq!(decoded(&d, &mut row, text), want.clone(), "{}", text);
    prop_assert_eq!(decoded(&d, &mut row, text), want, "{}", text);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10000, .. ProptestConfig::default() })]

    #[test]
    fn decodes_like_serde(text in object(), mask in mask()) {
        same_as_serde(&text, mask)?;
    }

    #[test]
    fn decodes_flat_objects_like_serde_and_fast(text in flat_object(), mask in mask()) {
        same_as_serde(&text, mask.clone())?;
        let d = RowDecoder::new(schema(), mask.map(Arc::from));
        let mut row = vec![Value::Null; 11];
        // Flat records whose types fit never need the serde path.
        prop_assert!(d.fast(&text, &mut row, None).is_some(), "{}", text);
    }

    /// One decoder through a run of records: each record's layout is predicted from the one
    /// before, so each comes in twice, the second time with other digits (the same layout,
    /// other values), between records of every kind.
    #[test]
    fn a_run_of_records_decodes_like_serde(
        texts in prop::collection::vec(prop_oneof![flat_object(), object()], 1..8),
        mask in mask(),
    ) {
        let schema = schema();
        let d = RowDecoder::new(schema.clone(), mask.clone().map(Arc::from));
        let mut row = vec![Value::from("stale"); schema.len()];
        let other_digits = |t: &str| -> String {
            t.chars()
                .map(|c| match c {
                    '1'..='8' => char::from(c as u8 + 1),
                    '9' => '1',
                    c => c,
                })
                .collect()
        };
        for text in &texts {
            for text in [text.clone(), other_digits(text)] {
                let want = reference(&schema, mask.as_deref(), &text);
                prop_assert_eq!(decoded(&d, &mut row, &text), want, "{}", text);
            }
        }
    }
}

#[test]
fn a_repeated_layout_is_predicted_and_a_changed_one_is_not() {
    let d = RowDecoder::new(schema(), None);
    let mut row = vec![Value::Null; 11];
    let first = r#"{"id":0,"user":"u5668","page":"/p/43","amount":5094,"ts":1700000000000}"#;
    d.decode_nulled(first, &mut row).expect("decodes");
    let mut next = vec![Value::Null; 11];
    let same = r#"{"id":1,"user":"u4826","page":"/p/24","amount":3872,"ts":1700000000001}"#;
    assert!(d.shape.borrow().decode(same, &mut next).is_some());
    assert_eq!(next[1], Value::from("u4826"));
    assert_eq!(next[4], Value::Int(1_700_000_000_001));
    for other in [
        r#"{"id":1,"user":"u4826","page":"/p/24","amount":3872}"#,
        r#"{"id":1,"user":"u4826","page":"/p/24","amount":3872,"ts":1,"x":2}"#,
        r#"{"id":1, "user":"u4826","page":"/p/24","amount":3872,"ts":1}"#,
        r#"{"id":1,"usex":"u4826","page":"/p/24","amount":3872,"ts":1}"#,
        r#" {"id":1,"user":"u4826","page":"/p/24","amount":3872,"ts":1}"#,
    ] {
        let mut row = vec![Value::Null; 11];
        assert!(
            d.shape.borrow().decode(other, &mut row).is_none(),
            "{other}"
        );
    }
    // Keys of any length are predicted (tokens past 16 bytes compare byte by byte).
    let long = r#"{"a_rather_long_field_name":1,"window_start":2,"id":3}"#;
    d.decode_nulled(long, &mut row).expect("decodes");
    let mut next = vec![Value::Null; 11];
    let again = r#"{"a_rather_long_field_name":7,"window_start":8,"id":9}"#;
    assert!(d.shape.borrow().decode(again, &mut next).is_some());
    assert_eq!(next[0], Value::Int(9));
    let differs = r#"{"a_rather_long_field_namX":7,"window_start":8,"id":9}"#;
    assert!(d.shape.borrow().decode(differs, &mut next).is_none());
    // A layout with whitespace between tokens is not learnt.
    d.decode_nulled(r#"{"id": 1}"#, &mut row).expect("decodes");
    assert!(d.shape.borrow().decode(r#"{"id": 2}"#, &mut row).is_none());
}

#[test]
fn typical_records_take_the_fast_path() {
    let d = RowDecoder::new(schema(), None);
    let mut row = vec![Value::Null; 11];
    for text in [
        r#"{"id":0,"user":"u5668","page":"/p/43","amount":5094,"ts":1700000000000}"#,
        r#" { "ts" : -5 , "zz" : [1] } "#.replace("[1]", "-2.5e3").as_str(),
        r#"{"user":"été 😀","a":true,"b":false,"x":3,"id":null,"zz":"\u0001"}"#
            .replace("\\u0001", "q")
            .as_str(),
        "{}",
    ] {
        assert!(d.fast(text, &mut row, None).is_some(), "{text}");
    }
    for text in [
        r#"{"user":"a\"b"}"#,
        r#"{"x":1.5}"#,
        r#"{"id":-0}"#,
        r#"{"id":1234567890123456789}"#,
        r#"{"zz":{"a":1}}"#,
        r#"{"id":"1"}"#,
        r#"{"id":1} x"#,
    ] {
        assert!(d.fast(text, &mut row, None).is_none(), "{text}");
    }
}

#[test]
fn duplicate_keys_keep_the_last_value() {
    let s = schema();
    let d = RowDecoder::new(s.clone(), None);
    let mut row = Vec::new();
    d.decode(r#"{"id":1,"id":2,"user":"a","user":null}"#, &mut row)
        .unwrap();
    assert_eq!(row[0], Value::Int(2));
    assert_eq!(row[1], Value::Null);
    assert_eq!(
        format!("{row:?}"),
        reference(&s, None, r#"{"id":1,"id":2,"user":"a","user":null}"#).unwrap()
    );
}

#[test]
fn integers_of_every_length_parse_exactly() {
    let mut n: i64 = 0;
    for digit in 1..=18 {
        n = n * 10 + (digit % 10);
        for text in [format!("{n},"), format!("-{n}"), n.to_string()] {
            let want = text.trim_end_matches(',').parse::<i64>().unwrap();
            assert_eq!(
                int(text.as_bytes(), 0).map(|(v, _)| v),
                Some(want),
                "{text}"
            );
        }
    }
    assert_eq!(int(b"1234567890123456789", 0), None);
    assert_eq!(int(b"12345678:", 0), Some((12345678, 8)));
    assert_eq!(int(b"1234567/", 0), Some((1234567, 7)));
}

#[test]
fn skipping_numbers_agrees_with_the_grammar() {
    let mut texts = vec![
        "0",
        "-0",
        "01",
        "-",
        "",
        "-a",
        "1.5",
        "1e5",
        "1E+5",
        "0.",
        "12345678",
        "123456789",
        "1234567890123456789012",
        "-1234567.5e-3",
        "7,",
        "7}",
        "77777777x",
        "99999999.",
    ];
    let long: Vec<String> = (0..40)
        .flat_map(|n| {
            let digits: String = (0..n).map(|i| char::from(b'1' + (i % 9) as u8)).collect();
            [
                digits.clone(),
                format!("-{digits},"),
                format!("{digits}.5}}"),
                format!("{digits}:"),
            ]
        })
        .collect();
    texts.extend(long.iter().map(String::as_str));
    for t in texts {
        let b = t.as_bytes();
        assert_eq!(skip_number(b, 0), skip_number_slow(b, 0), "{t:?}");
    }
}
