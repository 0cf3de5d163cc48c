// The reference server's whole flow, driven by openid-client (a certified OpenID Connect
// relying-party library from the npm registry, that nobody here wrote). Run by
// `.ci/openid-client-flow`, which installs the package and starts the server; the server's
// base URL comes as the first argument. Exits non-zero, with a message, on the first failure.
import * as client from 'openid-client';

const base = process.argv[2];
const redirectUri = process.argv[3];
const fail = (why) => { console.error(`openid-client flow: ${why}`); process.exit(1); };
const expect = (ok, why) => { if (!ok) fail(why); };

// RFC 8414 discovery ('oauth2': /.well-known/oauth-authorization-server), over loopback HTTP.
const config = await client.discovery(
  new URL(base), 'demo-client', 'demo-secret', client.ClientSecretBasic('demo-secret'),
  { algorithm: 'oauth2', execute: [client.allowInsecureRequests] },
);

async function login() {
  const verifier = client.randomPKCECodeVerifier();
  const challenge = await client.calculatePKCECodeChallenge(verifier);
  const state = client.randomState();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri, scope: 'profile',
    code_challenge: challenge, code_challenge_method: 'S256', state,
  });
  // Consent is auto-approved: the authorization endpoint redirects at once.
  const r = await fetch(url, { redirect: 'manual' });
  expect(r.status >= 300 && r.status < 400, `authorize answered ${r.status}`);
  const callback = new URL(r.headers.get('location'));
  return client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: verifier, expectedState: state,
  });
}

async function rejected(promise, code) {
  try { await promise; } catch (e) {
    return e.error === code || e.code === code || String(e).includes(code);
  }
  return false;
}

// 1. Code + PKCE → tokens.
const tokens = await login();
expect(tokens.access_token && tokens.refresh_token, 'no tokens from the code grant');
expect(tokens.token_type.toLowerCase() === 'bearer', `token_type ${tokens.token_type}`);
// 2. The resource.
const resource = new URL('/resource', base);
let r = await client.fetchProtectedResource(config, tokens.access_token, resource, 'GET');
expect(r.status === 200, `resource answered ${r.status}`);
expect((await r.json()).sub === 'demo-user', 'resource: wrong sub');
// 3. Refresh.
const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
expect(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, 'no new refresh token');
// 4. The old refresh token again: invalid_grant, and the new one is dead too.
expect(await rejected(client.refreshTokenGrant(config, tokens.refresh_token), 'invalid_grant'), 'reuse was not invalid_grant');
expect(await rejected(client.refreshTokenGrant(config, refreshed.refresh_token), 'invalid_grant'), 'the new refresh token survived reuse');
// 5. A second login, revoked; 6. introspection says inactive.
const second = await login();
let info = await client.tokenIntrospection(config, second.access_token);
expect(info.active === true, 'a fresh access token introspected inactive');
await client.tokenRevocation(config, second.refresh_token, { token_type_hint: 'refresh_token' });
info = await client.tokenIntrospection(config, second.access_token);
expect(info.active === false, 'introspection after revocation said active');
console.log('openid-client flow: ok (code + PKCE, resource, refresh, reuse, revoke, introspect)');
