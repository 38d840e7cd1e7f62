//! PID 1 of the LSM-BPF test guest: prepares the system, runs every case, powers off.

mod console;
mod setup;

use console::Reporter;

fn main() {
    let mut report = Reporter::default();
    std::panic::set_hook(Box::new(|info| {
        eprintln!("vigil-guest-init panicked: {info}");
        setup::power_off();
    }));

    match setup::mount_all().and_then(|()| setup::loopback_up()) {
        Ok(()) => run_cases(&mut report),
        Err(cause) => report.case("guest_setup", Err(cause)),
    }
    report.end();
    setup::power_off();
}

fn run_cases(report: &mut Reporter) {
    let lsms = setup::active_lsms();
    let bpf_active = lsms
        .as_ref()
        .is_ok_and(|list| list.split(',').any(|l| l.trim() == "bpf"));
    report.case(
        "bpf_lsm_active",
        match lsms {
            Ok(list) if bpf_active => Ok(format!("active LSMs: {}", list.trim())),
            Ok(list) => Err(format!("bpf missing from the active LSMs: {}", list.trim())),
            Err(cause) => Err(cause),
        },
    );
}
