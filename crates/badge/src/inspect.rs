//! `badge token inspect`: a token decoded for people, like jwt.io: header, claims, times in
//! local and relative form, what it is bound to, and whether the server accepts it.

use std::io::Read;
use std::path::PathBuf;

use base64::Engine;
use clap::Args;
use serde_json::{Value, json};

use badge_client::Client;

/// No `Debug`: it holds a token.
#[derive(Args)]
pub(crate) struct InspectOptions {
    /// The token, or `-` to read it from standard input (keeps it out of the process list).
    token: String,
    /// Check the token against this server (TokenReview and its JWKS).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

fn segment(token: &str, index: usize) -> anyhow::Result<Value> {
    let part = token
        .split('.')
        .nth(index)
        .ok_or_else(|| anyhow::anyhow!("not a JWT: expected three segments"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| anyhow::anyhow!("not a JWT: segment {} is not base64url", index + 1))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| anyhow::anyhow!("not a JWT: segment {} is not JSON", index + 1))
}

fn when(seconds: i64, now: i64) -> String {
    let Ok(t) = jiff::Timestamp::from_second(seconds) else {
        return seconds.to_string();
    };
    let local = t
        .to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string();
    let delta = seconds - now;
    let span = badge_api_age(delta.abs());
    match delta {
        0 => format!("{local} (now)"),
        d if d > 0 => format!("{local} (in {span})"),
        _ => format!("{local} ({span} ago)"),
    }
}

fn badge_api_age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

pub(crate) async fn run(options: InspectOptions) -> anyhow::Result<()> {
    let token = if options.token == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s.trim().to_string()
    } else {
        options.token.trim().to_string()
    };
    let header = segment(&token, 0)?;
    let claims = segment(&token, 1)?;
    let now = badge_api::clock::now().as_second();
    println!("Header:      {}", serde_json::to_string(&header)?);
    let field = |k: &str| claims.get(k).cloned().unwrap_or(Value::Null);
    println!("Issuer:      {}", field("iss").as_str().unwrap_or("-"));
    println!("Subject:     {}", field("sub").as_str().unwrap_or("-"));
    let audiences = match field("aud") {
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
        Value::String(s) => s,
        _ => "-".into(),
    };
    println!("Audiences:   {audiences}");
    for (label, key) in [("Issued at:", "iat"), ("Not before:", "nbf"), ("Expires:", "exp")] {
        match field(key).as_i64() {
            Some(t) => println!("{label:<12} {}", when(t, now)),
            None if key == "exp" => println!("{label:<12} never (a legacy Secret token)"),
            None => {}
        }
    }
    if let Some(jti) = field("jti").as_str() {
        println!("JTI:         {jti}");
    }
    let k8s = field("kubernetes.io");
    let mut bindings = Vec::new();
    for kind in ["pod", "secret", "node"] {
        if let Some(o) = k8s.get(kind) {
            let uid = o.get("uid").and_then(Value::as_str).unwrap_or("-");
            bindings.push(format!(
                "{kind} {} (uid {uid})",
                o.get("name").and_then(Value::as_str).unwrap_or("-")
            ));
        }
    }
    if let Some(secret) = claims
        .get("kubernetes.io/serviceaccount/secret.name")
        .and_then(Value::as_str)
    {
        bindings.push(format!("secret {secret} (legacy token)"));
    }
    println!(
        "Bound to:    {}",
        if bindings.is_empty() {
            "nothing (lives until it expires or its ServiceAccount is deleted)".into()
        } else {
            bindings.join(", ")
        }
    );
    if let Some(t) = k8s.get("warnafter").and_then(Value::as_i64) {
        println!("Warn after:  {}", when(t, now));
    }
    let Some(kubeconfig) = options.kubeconfig else {
        println!("Verifies:    not checked (no --kubeconfig)");
        return Ok(());
    };
    let client = Client::from_kubeconfig(&kubeconfig)?;
    let kid = header.get("kid").and_then(Value::as_str).unwrap_or("");
    if let Ok((200, jwks)) = client.request("GET", "/openid/v1/jwks", None).await {
        let published = jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|k| k["kid"].as_str() == Some(kid));
        println!(
            "In JWKS:     {}",
            if published {
                "yes, its key is published"
            } else {
                "no, its key is not published"
            }
        );
    }
    let review =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let (status, body) = client
        .request(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            Some(review),
        )
        .await?;
    // A check that was asked for and did not pass fails the command, so scripts can rely
    // on the exit code.
    if status != 201 {
        let reason = badge_client::error_text(&body);
        println!("Verifies:    unknown ({reason})");
        anyhow::bail!("the token could not be checked: {reason}");
    } else if body["status"]["authenticated"] == true {
        println!(
            "Verifies:    yes, the server accepts it as {}",
            body["status"]["user"]["username"].as_str().unwrap_or("-")
        );
        Ok(())
    } else {
        println!(
            "Verifies:    no, {}",
            body["status"]["error"]
                .as_str()
                .unwrap_or("the server does not accept it")
        );
        anyhow::bail!("the server does not accept the token");
    }
}
