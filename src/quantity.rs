//! Kubernetes quantities ("700Mi", "1G", "1.5Gi") to bytes, for `maxmemory` and headroom checks.

/// Parses a Kubernetes quantity into whole bytes (fractions are rounded down).
/// Returns `None` for anything that is not a non-negative quantity with a byte suffix or none.
pub fn parse_bytes(quantity: &str) -> Option<u64> {
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return None,
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || (number.contains('.') && fraction.is_empty())
    {
        return None;
    }
    let whole_bytes = whole.parse::<u64>().ok()?.checked_mul(multiplier)?;
    // Fraction: digits / 10^len * multiplier, computed in u128 to stay exact.
    let fraction_bytes = if fraction.is_empty() {
        0
    } else {
        let digits = fraction.get(..fraction.len().min(18))?;
        let numerator = digits.parse::<u128>().ok()? * u128::from(multiplier);
        let denominator = 10u128.pow(digits.len() as u32);
        u64::try_from(numerator / denominator).ok()?
    };
    whole_bytes.checked_add(fraction_bytes)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn parses_binary_and_decimal_suffixes() {
        assert_eq!(parse_bytes("1Gi"), Some(1 << 30));
        assert_eq!(parse_bytes("700Mi"), Some(700 << 20));
        assert_eq!(parse_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("0.5k"), Some(500));
    }

    #[test]
    fn rejects_what_is_not_a_byte_quantity() {
        for bad in ["", "Gi", "1.Gi", "-1Gi", "1gb", "1e3", "1 Gi", "1.2.3", "99999999999Ei"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }
}
