/// Parses a duration like `500ms`, `10s`, `1m30s`, `2h` or `1d` into milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let hint = || format!("expected a duration like 10s, 500ms, 1m30s or 2h, got `{s}`");
    let t = s.trim();
    if t.is_empty() {
        return Err(hint());
    }
    if t == "0" {
        return Ok(0);
    }
    let mut total: i64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(hint());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| hint())?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match &rest[..unit] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(hint()),
        };
        rest = &rest[unit..];
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(hint)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("10s"), Ok(10_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("0"), Ok(0));
    }

    #[test]
    fn rejects_bad_input_with_a_hint() {
        for bad in ["", "10", "ten seconds", "5x", "s", "-1s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("expected a duration like"), "{bad}: {e}");
        }
    }
}
