/** The client's name and version, as its hello and `--version` say it. */
export const CLIENT_VERSION = "hopgate-client/0.1.0";
