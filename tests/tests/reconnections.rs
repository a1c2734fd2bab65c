//! `socket_reconnections_total` counts a user's device coming back soon after it left.

use std::time::Duration;

use serde_json::json;
use switchboard_actors::auth::mint_hs256;
use switchboard_tests::{Node, SioClient, metric};

const SECRET: &str = "reconnection-test-secret-0123456789abcdef";

#[tokio::test]
async fn the_same_device_coming_back_counts_as_a_reconnection() {
    let node = Node::start(&["--jwt-secret", SECRET]).await;
    let addr = node.addr();
    let token = mint_hs256(SECRET.as_bytes(), "rita", 3600, &[]);
    let auth = |device: &str| json!({"token": token, "deviceId": device});

    let first = SioClient::connect(addr, auth("phone")).await;
    // Another device of the same user is not a reconnection.
    let laptop = SioClient::connect(addr, auth("laptop")).await;
    assert_eq!(metric(addr, "socket_reconnections_total").await, 0.0);

    first.disconnect().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metric(addr, "socket_connections_active").await != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the phone never left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _again = SioClient::connect(addr, auth("phone")).await;
    assert_eq!(metric(addr, "socket_reconnections_total").await, 1.0);
    drop(laptop);
}
