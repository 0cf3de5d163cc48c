//! A one-line description of the machine the figures were measured on.

use std::fs;

/// Describes this machine: CPU model, logical CPUs, memory, kernel, and that it is shared.
///
/// For example `Intel(R) Xeon(R) Processor, 2 CPUs, 23.5 GiB RAM, Linux 6.18.44 x86_64 (shared
/// machine)`. Read from `/proc`; parts that cannot be read are left out.
pub fn describe() -> String {
    let mut parts = Vec::new();
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if let Some(model) = field(&cpuinfo, "model name") {
        parts.push(model.to_owned());
    }
    if let Ok(n) = std::thread::available_parallelism() {
        parts.push(format!("{n} CPUs"));
    }
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    if let Some(kib) = field(&meminfo, "MemTotal")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
    {
        parts.push(format!("{:.1} GiB RAM", kib as f64 / (1024.0 * 1024.0)));
    }
    let read = |p: &str| {
        fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let (os, release) = (
        read("/proc/sys/kernel/ostype"),
        read("/proc/sys/kernel/osrelease"),
    );
    if !release.is_empty() {
        parts.push(
            format!("{os} {release} {}", std::env::consts::ARCH)
                .trim()
                .to_owned(),
        );
    }
    format!("{} (shared machine)", parts.join(", "))
}

/// The value of the first `name: value` line of a `/proc` file.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn says_it_is_shared() {
        let d = super::describe();
        assert!(d.ends_with("(shared machine)"), "{d}");
    }
}
