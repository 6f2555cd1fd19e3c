//! vnid as `vnid serve` runs it (settings from `VNID__…`), but keeping NO
//! audit trail: to measure what the trail costs, never to serve.

/// Serves at `addr` with state under `data_dir`, until SIGTERM.
pub fn without_trail(addr: &str, data_dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut settings = vnid::config::Settings::load(None, std::env::vars())?;
    settings.listen = addr.parse()?;
    settings.data_dir = data_dir.into();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _traces = vnid::telemetry::init(&settings.log, &settings.telemetry, std::io::stdout)
            .map_err(vnid::startup::StartupError::Refused)?;
        let app = vnid::app::Application::build_to_measure_without_trail(&settings).await?;
        app.run_until_stopped(vnid::app::shutdown_signal()).await
    })?;
    Ok(())
}
