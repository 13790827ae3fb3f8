// WebAuthn for the console: the node's options carry base64url fields, the browser's API wants
// bytes; its answers go back as the JSON py_webauthn reads (base64url fields again).

export const fromB64 = (text) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
export const toB64 = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
  .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

/** Create a passkey from ``PublicKeyCredentialCreationOptions`` JSON; the answer for POST /passkeys. */
export async function createPasskey(options) {
  if (!window.PublicKeyCredential) throw new Error("this browser offers no passkeys here (https or localhost only)");
  const publicKey = {
    ...options,
    challenge: fromB64(options.challenge),
    user: { ...options.user, id: fromB64(options.user.id) },
    excludeCredentials: (options.excludeCredentials || []).map((c) => ({ ...c, id: fromB64(c.id) })),
  };
  const credential = await navigator.credentials.create({ publicKey });
  const r = credential.response;
  return {
    id: credential.id, rawId: toB64(credential.rawId), type: credential.type,
    response: {
      clientDataJSON: toB64(r.clientDataJSON), attestationObject: toB64(r.attestationObject),
      transports: r.getTransports ? r.getTransports() : [],
    },
    clientExtensionResults: {},
  };
}

/** Sign with a passkey from ``PublicKeyCredentialRequestOptions`` JSON; the answer for POST /session/passkey. */
export async function usePasskey(options) {
  const publicKey = {
    ...options,
    challenge: fromB64(options.challenge),
    allowCredentials: (options.allowCredentials || []).map((c) => ({ ...c, id: fromB64(c.id) })),
  };
  const credential = await navigator.credentials.get({ publicKey });
  const r = credential.response;
  return {
    id: credential.id, rawId: toB64(credential.rawId), type: credential.type,
    response: {
      authenticatorData: toB64(r.authenticatorData), clientDataJSON: toB64(r.clientDataJSON),
      signature: toB64(r.signature), userHandle: r.userHandle ? toB64(r.userHandle) : null,
    },
    clientExtensionResults: {},
  };
}
