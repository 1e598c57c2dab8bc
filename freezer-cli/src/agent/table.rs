//! The result table upstream's agent prints after a backup: Python prettytable's default
//! look (a `+---+` frame, one space of padding, every cell centred as `str.center` does).

use serde_json::Value;

/// Python's `str.center(width)`: the odd space goes left when the padding and the width are
/// both odd, right otherwise.
fn center(text: &str, width: usize) -> String {
    let len = text.chars().count();
    if len >= width {
        return text.to_string();
    }
    let pad = width - len;
    let left = pad / 2 + (pad & width & 1);
    format!("{}{text}{}", " ".repeat(left), " ".repeat(pad - left))
}

/// A table with these column headers and rows, as prettytable prints it (no final newline).
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .flat_map(|c| c.lines())
                .map(|l| l.chars().count())
                .chain([headers[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s
    };
    let line = |cells: &[String]| {
        // A cell of several lines spreads over as many table lines.
        let height = cells
            .iter()
            .map(|c| c.lines().count().max(1))
            .max()
            .unwrap_or(1);
        let mut out = Vec::new();
        for l in 0..height {
            let mut s = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let text = cells.get(i).and_then(|c| c.lines().nth(l)).unwrap_or("");
                s.push(' ');
                s.push_str(&center(text, *w));
                s.push_str(" |");
            }
            out.push(s);
        }
        out.join("\n")
    };
    let mut out = vec![rule.clone()];
    out.push(line(
        &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    ));
    out.push(rule.clone());
    for r in rows {
        out.push(line(r));
    }
    out.push(rule);
    out.join("\n")
}

/// A value as Python's `str()` shows it: strings bare, `True`/`False`, `None`.
pub fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

/// Upstream's "Property | Value" table of a result document, `_` in keys shown as spaces.
pub fn property_value(doc: &Value) -> String {
    let rows: Vec<Vec<String>> = doc
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| vec![k.replace('_', " "), python_str(v)])
                .collect()
        })
        .unwrap_or_default();
    render(&["Property", "Value"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centred_as_python() {
        // "Property" in a 29-wide column: 11 left, 10 right (str.center).
        assert_eq!(
            center("Property", 29),
            format!("{}Property{}", " ".repeat(11), " ".repeat(10))
        );
        assert_eq!(
            center("Value", 26),
            format!("{}Value{}", " ".repeat(10), " ".repeat(11))
        );
        assert_eq!(center("ab", 5), "  ab ");
        assert_eq!(center("ab", 6), "  ab  ");
    }

    #[test]
    fn prettytable_layout() {
        let t = property_value(&serde_json::json!({"backup_name": "web", "curr_backup_level": 0}));
        assert_eq!(
            t,
            "+-------------------+-------+\n\
             |      Property     | Value |\n\
             +-------------------+-------+\n\
             |    backup name    |  web  |\n\
             | curr backup level |   0   |\n\
             +-------------------+-------+"
        );
    }
}
