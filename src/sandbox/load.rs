//! `omni-gateway sandbox --serve ADDR`: the gateway with one connected page and no tour, for
//! webhook load generators (BENCHMARKS.md, "Webhook ingest"). Rocket.Chat can be simulated up
//! (every event is delivered) or answering 503 to every REST call, so every event is stored and
//! held: ingest alone.

use std::net::SocketAddr;

use secrecy::SecretString;

use super::{Error, Sandbox};
use crate::ids::PageId;
use crate::store::{Page, PageStatus};

/// What the load generator expects of the gateway it drives.
pub struct LoadTarget {
    pub listen: SocketAddr,
    pub app_secret: String,
    pub page: String,
    pub rocketchat_down: bool,
    /// With `rocketchat_down`: Rocket.Chat comes back after this long (a backlog drains).
    pub rocketchat_back_after: Option<std::time::Duration>,
}

/// Serves `target` until Ctrl-C or SIGTERM.
pub async fn serve_load_target(target: LoadTarget, say: &mut dyn FnMut(&str)) -> Result<(), Error> {
    if !target.listen.ip().is_loopback() {
        return Err(Error::Setup(format!(
            "--serve {} is not a loopback address: the sandbox only listens on this machine",
            target.listen
        )));
    }
    let sandbox =
        Sandbox::start_with(Some(target.app_secret.clone()), Some(target.listen.port())).await?;
    let name = format!("Load page {}", target.page);
    // A token the Graph simulator knows, so profile lookups and sends behave as on a page
    // connected through `/facebook authorize`.
    sandbox
        .facebook
        .add_page(super::FB_ADMIN, &target.page, &name, &["MESSAGING"]);
    let token = sandbox
        .facebook
        .issue_page_token(super::FB_ADMIN, &target.page);
    let mut page = Page::new(PageId::new(target.page.as_str()), name);
    page.token = Some(SecretString::from(token));
    page.status = PageStatus::Connected;
    let connected = match sandbox.gateway.store.put_page(&page) {
        Ok(()) => sandbox.gateway.store.sync().await,
        Err(err) => Err(err),
    };
    if let Err(err) = connected {
        sandbox.stop().await;
        return Err(Error::Setup(format!(
            "cannot connect page {}: {err}",
            target.page
        )));
    }
    // A load generator brings hundreds of new customers a second; the real per-IP limit on new
    // conversations (5 a minute) would measure the limiter, not the gateway.
    sandbox
        .chat
        .set_setting("API_Enable_Rate_Limiter", serde_json::json!(false));
    if target.rocketchat_down {
        sandbox.chat.fail_next_rest(usize::MAX, 503);
    }
    let back = async {
        match target.rocketchat_back_after {
            Some(after) if target.rocketchat_down => {
                tokio::time::sleep(after).await;
                sandbox.chat.fail_next_rest(0, 503);
                tracing::warn!("sandbox: Rocket.Chat is back");
            }
            _ => std::future::pending::<()>().await,
        }
    };
    say(&format!(
        "serving page {} at {}/webhooks/messenger (app secret as given; Rocket.Chat {}); Ctrl-C stops",
        target.page,
        sandbox.gateway_url(),
        if target.rocketchat_down {
            "answering 503"
        } else {
            "up"
        },
    ));
    tokio::select! {
        () = crate::systemd::shutdown_signal() => {}
        () = async { back.await; crate::systemd::shutdown_signal().await } => {}
    }
    sandbox.stop().await;
    Ok(())
}
